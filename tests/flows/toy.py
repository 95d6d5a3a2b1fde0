"""Tiny synthetic DVC pipelines: the flow is generic over any pipeline, and these run in ms.

Every toy stage runs `python step.py NAME OUT [IN ...]`, which appends a JSON line with its
start and end time to $TOY_LOG (outside every workspace, so a stage that DVC restores instead
of running leaves no line), sleeps $TOY_SLEEP seconds when NAME is in $TOY_SLOW, fails when
NAME is in $TOY_FAIL, and fails once when NAME is in $TOY_FLAKY; the line records the
CUDA_VISIBLE_DEVICES and OMP_NUM_THREADS it was given.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import git

STEP = '''"""A toy stage (tests/flows/toy.py)."""
import json, os, sys, time
from pathlib import Path

name, out, *inputs = sys.argv[1:]
log = Path(os.environ["TOY_LOG"])
start = time.time()
if name in os.environ.get("TOY_SLOW", "").split(","):
    time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
flaky_marker = log.with_name(log.name + "." + name + ".failed")
fail = name in os.environ.get("TOY_FAIL", "").split(",") or (
    name in os.environ.get("TOY_FLAKY", "").split(",") and not flaky_marker.exists()
)
with log.open("a") as entries:
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    entry = {"stage": name, "start": start, "end": time.time(), "ok": not fail, "gpu": gpu}
    entry["threads"] = os.environ.get("OMP_NUM_THREADS")
    entries.write(json.dumps(entry))
    entries.write("\\n")
if fail:
    flaky_marker.touch()
    raise RuntimeError(f"boom in {name}")
Path(out).parent.mkdir(parents=True, exist_ok=True)
Path(out).write_text(name + "".join(Path(i).read_text() for i in inputs))
'''


def stage(name: str, *inputs: str) -> dict[str, Any]:
    """Return a dvc.yaml stage running step.py for `name` on the outputs of `inputs`."""
    paths = [f"out/{i}.txt" for i in inputs]
    return {
        "cmd": " ".join(["python step.py", name, f"out/{name}.txt", *paths]),
        "deps": ["step.py", *paths],  # a stage with no deps always runs (DESIGN.md)
        "outs": [f"out/{name}.txt"],
    }


def make_toy_repo(root: Path, stages: dict[str, Any]) -> Path:
    """Create a committed git + DVC repository at `root` with `stages` in dvc.yaml."""
    (root / ".dvc").mkdir(parents=True)
    # What `dvc init` writes, without the seconds its start-up takes.
    (root / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    (root / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    (root / ".dvcignore").write_text("")
    (root / "step.py").write_text(STEP)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "toy pipeline")
    return root


def clone(origin: Path, dest: Path) -> Path:
    """Return a separate checkout of `origin` (its own DVC cache, like another machine)."""
    git(origin.parent, "clone", "-q", str(origin), str(dest))
    return dest


def entries(log: Path) -> list[dict[str, Any]]:
    """Return the toy stages' log entries, oldest first."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def runs_of(log: Path, name: str) -> list[dict[str, Any]]:
    """Return the log entries of stage `name`."""
    return [entry for entry in entries(log) if entry["stage"] == name]


def run_flow(
    repo: Path, env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `python -m flows.pipeline` on `repo` as a user does."""
    return subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--root", str(repo), *args],
        cwd=Path(__file__).resolve().parents[2],  # the flows package under test
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def dvc(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run dvc in `repo`; fail the test when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env={**env, "DVC_NO_ANALYTICS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def flow_run_id(tracking_uri: str) -> str:
    """Return the Prefect flow-run id the last pipeline run in MLflow was tagged with."""
    run = pipeline_runs(tracking_uri)[-1]
    return run.data.tags["kdflow.prefect_flow_run_id"]


def pipeline_runs(tracking_uri: str) -> list[Any]:
    """Return the flow's pipeline runs in MLflow, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("kdflow")
    assert experiment is not None, "the flow opened no MLflow run"
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`kdflow.stage` = 'pipeline'",
        order_by=["attributes.start_time ASC"],
    )
    return list(runs)


def env_for_toys(base: dict[str, str], log: Path, **toy: str) -> dict[str, str]:
    """Return `base` with the toy stage switches ($TOY_LOG, $TOY_SLOW, …) set."""
    env = {k: v for k, v in base.items() if not k.startswith("TOY_")}
    env["TOY_LOG"] = str(log)
    env.update({f"TOY_{key.upper()}": value for key, value in toy.items()})
    return env
