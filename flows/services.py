"""`make up` / `make down`: a local Prefect server, MLflow server and Prefect worker.

    python -m flows.services up [--prefect-port 4200] [--mlflow-port 5000]
    python -m flows.services down

Everything binds to 127.0.0.1 and keeps its state in the repository: pid files, logs and the
Prefect server's database under .kdflow/, MLflow runs in mlflow.db (the store stages use when
no server is set) with artifacts in mlartifacts/. The worker serves work pool `gpu` from this
checkout (KDFLOW_REPO), so deployments from prefect.yaml run here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".kdflow"
VENV_BIN = Path(sys.executable).parent
POOL = "gpu"
START_TIMEOUT = 240  # seconds; both servers take ~20 s on a busy 2-core machine
SERVICES = ("prefect-server", "mlflow-server", "worker")  # started in this order


class ServiceError(Exception):
    """A service could not start; the message says which and where its log is."""


def _pid_file(name: str) -> Path:
    return STATE / f"{name}.pid"


def _running(name: str) -> int | None:
    """Return the pid of service `name` if its pid file names a live process of ours."""
    path = _pid_file(name)
    if not path.is_file():
        return None
    pid = int(path.read_text().strip() or 0)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    # A recycled pid belongs to someone else: only ours run prefect or mlflow from this venv.
    return pid if ("prefect" in cmdline or "mlflow" in cmdline) else None


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start(name: str, args: list[str], env: dict[str, str]) -> int:
    log = STATE / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: `down` stops its children too
        )
    _pid_file(name).write_text(f"{process.pid}\n")
    return process.pid


def _wait(name: str, url: str, pid: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if _running(name) != pid:
            raise ServiceError(f"{name} exited at start; see {STATE / (name + '.log')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise ServiceError(f"{name} did not answer {url} in {START_TIMEOUT} s; see its log")


def _environment(prefect_api: str, mlflow_uri: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_HOME"] = str(STATE / "prefect")
    env["PREFECT_API_URL"] = prefect_api
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["MLFLOW_TRACKING_URI"] = mlflow_uri
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # GenAI job runners: not used here
    env["KDFLOW_REPO"] = str(ROOT)  # prefect.yaml's pull step: where the worker's flows run
    return env


def up(prefect_port: int, mlflow_port: int) -> None:
    """Start whatever of the three services is not running; print URLs and exports."""
    STATE.mkdir(exist_ok=True)
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
    env = _environment(prefect_api, mlflow_uri)
    commands = {
        "prefect-server": (
            [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1"]
            + ["--port", str(prefect_port)],
            f"{prefect_api}/health",
            prefect_port,
        ),
        "mlflow-server": (
            [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port)]
            + ["--backend-store-uri", f"sqlite:///{ROOT / 'mlflow.db'}"]
            + ["--artifacts-destination", str(ROOT / "mlartifacts"), "--workers", "1"],
            f"{mlflow_uri}/health",
            mlflow_port,
        ),
        # The worker creates pool `gpu` (type process) when it does not exist yet.
        "worker": (
            [str(VENV_BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
            f"{prefect_api}/work_pools/{POOL}",
            None,
        ),
    }
    started: dict[str, int] = {}
    for name in SERVICES:
        args, health, port = commands[name]
        if _running(name):
            print(f"{name}: already running (pid {_running(name)})")
            continue
        if port is not None and not _port_free(port):
            raise ServiceError(
                f"port {port} on 127.0.0.1 is taken; choose another, e.g. "
                f"make up {'PREFECT' if name.startswith('prefect') else 'MLFLOW'}_PORT={port + 1}"
            )
        if name == "worker":
            _wait("prefect-server", commands["prefect-server"][1], _running("prefect-server"))
        started[name] = _start(name, args, env)
    for name, pid in started.items():
        try:
            _wait(name, commands[name][1], pid)
        except ServiceError as exc:
            raise ServiceError(f"{exc}; `make down` stops the others") from None
    exports = f"export PREFECT_API_URL={prefect_api}\nexport MLFLOW_TRACKING_URI={mlflow_uri}\n"
    (STATE / "env").write_text(exports)
    print(
        f"Prefect UI  http://127.0.0.1:{prefect_port}\n"
        f"MLflow UI   {mlflow_uri}\n"
        f"Worker      pool '{POOL}', runs flows in {ROOT}\n"
        f"Logs        {STATE}/*.log   (stop all: make down)\n\n"
        f"In your shell (or: source .kdflow/env):\n{exports}\n"
        "Then:  .venv/bin/prefect deploy --all    # nightly + on-demand, from prefect.yaml\n"
        "       .venv/bin/prefect deployment run kdflow-pipeline/on-demand\n"
        "   or  make flow    # the same flow from this shell"
    )


def down() -> None:
    """Stop the services `up` started (worker first), each with its process group."""
    for name in reversed(SERVICES):
        pid = _running(name)
        if pid is None:
            _pid_file(name).unlink(missing_ok=True)
            continue
        # SIGINT first: a Prefect worker shuts down on it promptly, on SIGTERM only slowly.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _running(name) == pid:
                time.sleep(0.2)
            if _running(name) != pid:
                break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # children that outlived their leader
        _pid_file(name).unlink(missing_ok=True)
        print(f"{name}: stopped (pid {pid})")


def main(argv: list[str] | None = None) -> int:
    """Parse `up`/`down` and run it; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.services",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the Prefect server, MLflow server, worker")
    start.add_argument("--prefect-port", type=int, default=4200)
    start.add_argument("--mlflow-port", type=int, default=5000)
    commands.add_parser("down", help="stop them")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(args.prefect_port, args.mlflow_port)
        else:
            down()
    except ServiceError as exc:
        print(f"kdflow services: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
