"""Wall time of the pipeline through the Prefect flow vs. plain sequential `dvc repro`.

    .venv/bin/python benchmarks/flow_vs_repro.py --tiny          # ~10 minutes on 2 cores
    .venv/bin/python benchmarks/flow_vs_repro.py                 # default params: ~25 minutes

Both run in fresh scratch copies of this checkout (tracked and untracked, not ignored files),
each with its own empty DVC cache and MLflow store created before the clock starts. The flow
gets its own Prefect server (started before the clock too) and a fresh local DVC remote, so
every stage is computed once in both variants. Printed: stage count, both wall times, and the
flow's overhead (its extra time per stage: workspace clone, `dvc fetch`/`push`, Prefect API
calls, the closing restore), which parallel stages can hide on a machine with spare cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# Tiny and single-threaded, as in the stage tests: 500 MNIST-1D samples, one student.
TINY: dict[str, Any] = {
    "data": {"num_samples": 500},
    "runtime": {"device": "cpu", "threads": 1, "deterministic": False},
    "teacher": {"optim": {"batch_size": 64}},  # resnet8: the assembly stages need its widths
    "mcmi": {"optim": {"batch_size": 64}},
    "distill": {
        "student": "cnn3",
        "teachers": ["mll"],
        "methods": ["kd"],
        "protocols": ["full"],
        "seeds": [0],
        "optim": {"batch_size": 64},
    },
}
TINY_EPOCHS = 1  # every `epochs` key in params.yaml, so stages added later are tiny too


def shrink(params: dict[str, Any]) -> dict[str, Any]:
    """Return `params` with TINY merged in and every `epochs` set to TINY_EPOCHS."""

    def merge(base: dict[str, Any], override: dict[str, Any]) -> None:
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value

    def epochs(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "epochs" and isinstance(value, int):
                    node[key] = TINY_EPOCHS
                else:
                    epochs(value)

    merge(params, TINY)
    epochs(params)
    return params


def scratch_copy(dest: Path, tiny: bool) -> Path:
    """Copy this checkout's tracked and untracked (not ignored) files into a new git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        source = REPO / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)
    if tiny:
        path = dest / "params.yaml"
        path.write_text(yaml.safe_dump(shrink(yaml.safe_load(path.read_text())), sort_keys=False))
    identity = ["-c", "user.name=kdflow-bench", "-c", "user.email=bench@kdflow.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "benchmark copy"]):
        subprocess.run(["git", *identity, *args], cwd=dest, check=True, capture_output=True)
    return dest


def environment(tmp: Path, repo: Path) -> dict[str, str]:
    """Return the environment both variants run in: venv first, state under `tmp`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KDFLOW_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo / 'mlflow.db'}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["DVC_SITE_CACHE_DIR"] = str(tmp / "dvc-site-cache")
    env["PREFECT_HOME"] = str(tmp / "prefect-home")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["TMPDIR"] = str(tmp)
    return env


def create_tracking_store(uri: str) -> None:
    """Create the MLflow schema before the clock starts (it takes seconds)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()


def timed(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    """Run `args`, output to `log`; return its wall time, exiting on failure."""
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(args[:4])} failed (exit {done.returncode}); see {log}")
    return seconds


@contextlib.contextmanager
def prefect_server(env: dict[str, str], log: Path) -> Any:
    """Run a Prefect server on a free loopback port for the flow; yield its API URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1"]
            + ["--port", str(port)],
            env={**env, "PREFECT_SERVER_UI_ENABLED": "false"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    yield api
                    return
            time.sleep(0.5)
        sys.exit(f"the Prefect server did not start; see {log}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)


def main() -> None:
    """Run both variants and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny params (500 samples, 1 epoch)")
    parser.add_argument("--max-parallel", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="kdflow-bench-"))
    try:
        repro_repo = scratch_copy(tmp / "repro", args.tiny)
        flow_repo = scratch_copy(tmp / "flow", args.tiny)
        repro_env, flow_env = environment(tmp, repro_repo), environment(tmp, flow_repo)
        for env in (repro_env, flow_env):
            create_tracking_store(env["MLFLOW_TRACKING_URI"])

        repro_seconds = timed(
            [str(VENV_BIN / "dvc"), "repro"], repro_repo, repro_env, tmp / "repro.log"
        )
        ran = (tmp / "repro.log").read_text().count("Running stage '")
        with prefect_server(flow_env, tmp / "prefect-server.log") as api:
            flow_args = [sys.executable, "-m", "flows.pipeline", "--root", str(flow_repo)]
            flow_args += ["--remote", str(tmp / "remote"), "--retries", "0"]
            flow_args += ["--max-parallel", str(args.max_parallel)]
            flow_seconds = timed(
                flow_args, REPO, {**flow_env, "PREFECT_API_URL": api}, tmp / "flow.log"
            )
    finally:
        if args.keep:
            print(f"scratch folder kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    overhead = flow_seconds - repro_seconds
    print(f"params: {'tiny' if args.tiny else 'default'}   stages: {ran}   cpus: {os.cpu_count()}")
    print(f"dvc repro (sequential):           {repro_seconds:8.1f} s")
    print(f"flow (max_parallel={args.max_parallel}):            {flow_seconds:8.1f} s")
    print(
        f"flow overhead:                    {overhead:+8.1f} s "
        f"({flow_seconds / repro_seconds:.2f}×, {overhead / max(ran, 1):+.1f} s per stage)"
    )


if __name__ == "__main__":
    main()
