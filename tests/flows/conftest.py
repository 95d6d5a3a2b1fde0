"""Fixtures of the flow tests: one real Prefect server per session, environments for flows."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flows.servers import (
    VENV_BIN,
    PrefectApi,
    free_port,
    prefect_env,
    start,
    stop,
    wait_healthy,
)

SERVER_START_TIMEOUT = 240  # seconds; a Prefect server takes ~20 s to start on a loaded box


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the PREFECT_HOME every Prefect process of the session shares (never ~/.prefect)."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="session")
def prefect_api(prefect_home: Path) -> Iterator[str]:
    """Start `prefect server start` on a free loopback port; yield its API URL."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = prefect_env(prefect_home, api)
    env["PREFECT_UI_ENABLED"] = "false"  # no UI build at start-up: seconds saved
    env["PREFECT_SERVER_UI_ENABLED"] = "false"
    log = prefect_home / "server.log"
    args = [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1"]
    process = start([*args, "--port", str(port)], env, log)
    try:
        wait_healthy(f"{api}/health", process, log, SERVER_START_TIMEOUT)
        yield api
    finally:
        stop(process)


@pytest.fixture(scope="session")
def prefect(prefect_api: str) -> PrefectApi:
    """Return a REST client of the session's Prefect server."""
    return PrefectApi(prefect_api)


def flow_env_for(home: Path, api: str, tmp: Path, tracking_uri: str) -> dict[str, str]:
    """Return an environment for flows and dvc: venv first, Prefect, MLflow, DVC state in tmp."""
    env = prefect_env(home, api)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["DVC_SITE_CACHE_DIR"] = str(tmp / "dvc-site-cache")
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "kdflow-tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@kdflow.invalid"
    (tmp / "scratch").mkdir(parents=True, exist_ok=True)
    env["TMPDIR"] = str(tmp / "scratch")  # the flow's scratch workspaces stay in tmp
    for name in ("KDFLOW_DVC_REMOTE", "KDFLOW_PARENT_RUN_ID", "KDFLOW_REPO"):
        env.pop(name, None)
    return env


@pytest.fixture
def flow_env(
    tmp_path: Path, tracking_db: str, prefect_api: str, prefect_home: Path
) -> dict[str, str]:
    """Return an environment for `python -m flows.pipeline` against the session's server."""
    return flow_env_for(prefect_home, prefect_api, tmp_path, tracking_db)


@pytest.fixture(scope="module")
def module_tracking_db(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path) -> str:
    """Return a module-wide MLflow SQLite store with its schema in place."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    shutil.copyfile(mlflow_template_db, path)
    return f"sqlite:///{path}"
