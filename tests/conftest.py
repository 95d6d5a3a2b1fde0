"""Fixtures every test may use: an isolated MLflow store and a scratch copy of the repository."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from stages._cli import TRACE_ENV
from tests.helpers import TINY_PIPELINE, copy_repo, git, run_in_pipeline, set_params

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


@pytest.fixture(scope="session")
def tiny_pipeline(
    tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path
) -> dict[str, Any]:
    """Return the repository, commit and `dvc repro` output of one tiny whole pipeline.

    Built once per session (it is the suite's most expensive fixture); tests read it and
    copy it (tests.helpers.copy_pipeline) before they change anything.
    """
    repo = copy_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    set_params(repo, TINY_PIPELINE)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny pipeline")
    shutil.copyfile(mlflow_template_db, repo / "mlflow.db")  # git-ignored, schema in place
    # Each stage records what it read (stages/_cli.py); tests/dvc compares that to dvc.yaml.
    traces = repo.parent / "traces"
    done = run_in_pipeline(
        repo, [str(VENV_BIN / "dvc"), "repro"], timeout=900, env={TRACE_ENV: str(traces)}
    )
    assert done.returncode == 0, f"dvc repro failed:\n{done.stdout}\n{done.stderr}"
    return {
        "repo": repo,
        "commit": git(repo, "rev-parse", "HEAD"),
        "repro": done,
        "traces": traces,
    }
