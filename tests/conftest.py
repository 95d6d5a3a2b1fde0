"""Fixtures every test may use: an isolated MLflow store and a scratch copy of the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # the venv running pytest; stage commands say `python`

# What a stage needs to run from a scratch copy (no data, no outputs, no caches).
REPO_FILES = ("params.yaml", "dvc.yaml", ".gitignore", ".dvcignore", ".dvc/config")
REPO_TREES = ("kdflow", "stages")


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


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` with a fixed identity; return stdout."""
    identity = ["-c", "user.name=kdflow-tests", "-c", "user.email=tests@kdflow.invalid"]
    done = subprocess.run(
        ["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True
    )
    return done.stdout


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """Return a scratch git repository holding the code and pipeline files of this repo."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in REPO_FILES:
        if (REPO / name).exists():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in REPO_TREES:
        shutil.copytree(REPO / name, root / name, ignore=ignore)
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
