"""One tiny prepared workspace for the robustness tests, and one reference distillation.

The workspace (500 MNIST-1D samples prepared by the real `prepare` stage, plus an MLL teacher
file) is built once per session; each test works in its own copy of it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.flows.servers import free_port
from tests.helpers import copy_repo, git, set_params
from tests.robustness.helpers import (
    DISTILL_ARGS,
    DISTILL_NAME,
    DISTILL_RECORD,
    PYTHON,
    TINY,
    copy_workspace,
    make_env,
    ok,
    read_json,
    run,
    stage_command,
)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path) -> Path:
    """Return a scratch repository with tiny params, prepared data and an MLL teacher file."""
    root = copy_repo(tmp_path_factory.mktemp("workspace") / "repo")
    set_params(root, TINY)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "scratch copy")
    # Compiled once here, the copies' stage processes skip compiling kdflow (copytree keeps
    # the source mtimes the .pyc files are checked against).
    ok(run([PYTHON, "-m", "compileall", "-q", "kdflow", "stages"], root, make_env("")))
    db = root.parent / "mlflow.db"
    shutil.copyfile(mlflow_template_db, db)
    ok(run(stage_command("prepare"), root, make_env(f"sqlite:///{db}")))

    # The teacher is written here rather than trained by its stage (which tests/stages
    # covers): the distillation below only needs a fixed, valid teacher file, and this saves
    # a stage run.
    import torch

    from kdflow.data.tensors import read_meta
    from kdflow.models import build_model
    from kdflow.train.checkpoint import data_expectations, save_model

    meta = read_meta(root / "data" / "prepared")
    torch.manual_seed(0)
    teacher = build_model("cnn3", tuple(meta["input_shape"]), meta["num_classes"])
    save_model(
        root / "models" / "teacher" / "mll.pt",
        teacher,
        {"arch": "cnn3", **data_expectations(meta), "stage": "teacher_mll"},
    )
    return root


@pytest.fixture(scope="session")
def distill_reference(
    workspace: Path, tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path
) -> dict[str, Any]:
    """Run distill once, uninterrupted, with a tracking server that does not answer.

    tracking.required is false (TINY), so the stage falls back to the local SQLite store:
    the run is both the services test's fallback case and the interrupt tests' reference.
    """
    repo = copy_workspace(workspace, tmp_path_factory.mktemp("reference") / "repo")
    shutil.copyfile(mlflow_template_db, repo / "mlflow.db")  # the fallback store, schema ready
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = ok(run(stage_command("distill", *DISTILL_ARGS), repo, make_env(uri)))
    return {
        "repo": repo,
        "uri": uri,
        "stderr": done.stderr,
        "metrics": read_json(repo / "metrics" / "distill" / f"{DISTILL_NAME}.json"),
        "run_id": read_json(repo / DISTILL_RECORD)["mlflow_run_id"],
        "tsv": (repo / "plots" / "distill" / f"{DISTILL_NAME}.tsv").read_text(),
    }
