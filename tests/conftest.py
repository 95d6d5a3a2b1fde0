"""Fixtures every test may use: an isolated MLflow store and a scratch copy of the repository."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers import copy_repo, git

VENV_BIN = Path(sys.executable).parent  # the venv running pytest; stage commands say `python`


@pytest.fixture(autouse=True)
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point MLflow at a SQLite file inside the test's tmp_path, never the repo's mlflow.db."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return an empty MLflow SQLite store with its schema created (creating it takes seconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_db(tmp_path: Path, tracking_uri: str, mlflow_template_db: Path) -> str:
    """Return the test's tracking URI with the store's schema already in place."""
    shutil.copyfile(mlflow_template_db, tmp_path / "mlflow.db")
    return tracking_uri


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """Return a scratch git repository holding the code and pipeline files of this repo."""
    root = copy_repo(tmp_path / "repo")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "scratch copy")
    return root


@pytest.fixture
def stage_env(tmp_path: Path, tracking_uri: str) -> dict[str, str]:
    """Return an environment for stage and dvc subprocesses: venv first, isolated stores."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["DVC_SITE_CACHE_DIR"] = str(tmp_path / "dvc-site-cache")
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "kdflow-tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@kdflow.invalid"
    env.pop("KDFLOW_PARENT_RUN_ID", None)
    return env
