"""Real servers for the flow tests, on loopback and free ports, with all state in tmp dirs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

VENV_BIN = Path(sys.executable).parent
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prefect_env(home: Path, api: str | None) -> dict[str, str]:
    """Return an environment for Prefect commands: its own PREFECT_HOME, never ~/.prefect."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_WORKER_QUERY_SECONDS"] = "1"  # a worker picks up a run within a second
    env["DO_NOT_TRACK"] = "1"
    if api:
        env["PREFECT_API_URL"] = api
    return env


def start(args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> Any:
    """Start a server in its own process group (so stop() reaches its children); log to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_healthy(url: str, process: Any, log: Path, timeout: float) -> None:
    """Poll `url` until it answers 200; fail with the log's tail if the process dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args[:3]} exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(process: Any, grace: float = 10.0) -> None:
    """Stop a process started by start(), then anything left in its process group."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    # Children that outlive their leader (uvicorn workers, MLflow's job runner).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


class PrefectApi:
    """The few Prefect REST calls the tests need (no prefect import in the test process)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def get(self, path: str) -> Any:
        """GET an API path; return its JSON."""
        response = httpx.get(f"{self.url}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST to an API path; return its JSON."""
        response = httpx.post(f"{self.url}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        """Return a flow run."""
        return self.get(f"/flow_runs/{flow_run_id}")

    def task_runs(self, flow_run_id: str) -> dict[str, dict[str, Any]]:
        """Return the task runs of a flow run by name."""
        runs = self.post(
            "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200}
        )
        return {run["name"]: run for run in runs}

    def logs(self, flow_run_id: str) -> list[str]:
        """Return every log message of a flow run and its task runs, oldest first."""
        messages: list[str] = []
        while True:
            page = self.post(
                "/logs/filter",
                {
                    "logs": {"flow_run_id": {"any_": [flow_run_id]}},
                    "sort": "TIMESTAMP_ASC",
                    "offset": len(messages),
                    "limit": 200,
                },
            )
            messages.extend(entry["message"] for entry in page)
            if len(page) < 200:
                return messages

    def wait_flow_run(self, flow_run_id: str, timeout: float) -> dict[str, Any]:
        """Wait for a flow run to reach a terminal state; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.flow_run(flow_run_id)
            if run["state_type"] in TERMINAL:
                return run
            time.sleep(1)
        raise AssertionError(f"flow run {flow_run_id} still {run['state_type']} after {timeout} s")
