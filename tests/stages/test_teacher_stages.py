"""The teacher stages as users run them: outputs, MLflow runs, resume after SIGKILL, errors.

The data is prepared once per module (500 MNIST-1D samples) and copied into each scratch repo;
one uninterrupted `teacher_mll` run serves both the pipeline test and the kill test's reference.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kdflow.train.checkpoint import load_model
from tests.helpers import set_params as _set_params
from tests.helpers import signal_after_epoch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TEACHER_EPOCHS = 30  # ~70 ms epochs: the kill test has seconds between epoch 2 and the end
MCMI_EPOCHS = 2
# Tiny and single-threaded: on a loaded machine idle torch threads slow these models 10-100×.
TINY = {
    "data": {"num_samples": 500},
    "runtime": {"threads": 1, "deterministic": True},
    "teacher": {"model": "cnn3", "optim": {"epochs": TEACHER_EPOCHS, "batch_size": 64}},
    "mcmi": {"optim": {"epochs": MCMI_EPOCHS, "batch_size": 64}},
}
OUTPUTS = ("models", "metrics", "plots", "checkpoints")


def _stage(repo: Path, env: dict[str, str], name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", f"stages.{name}"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"{done.args} failed:\n{done.stderr}"
    return done


def _scratch(root: Path) -> Path:
    """Copy the code and params into a new folder `root` (a module-wide scratch repository)."""
    root.mkdir(parents=True)
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tree in ("kdflow", "stages"):
        shutil.copytree(REPO / tree, root / tree, ignore=ignore)
    return root


def _tiny(repo: Path, prepared: Path | None) -> Path:
    """Give `repo` the tiny params and, when given, a copy of the prepared data."""
    _set_params(repo, TINY)
    if prepared is not None:
        shutil.copytree(prepared, repo / "data" / "prepared")
    return repo


def _env(tracking_uri: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.pop("KDFLOW_PARENT_RUN_ID", None)
    return env


def _metrics(repo: Path, name: str) -> dict[str, Any]:
    return json.loads((repo / "metrics" / "teacher" / f"{name}.json").read_text())


def _tsv(path: Path) -> list[dict[str, str]]:
    header, *lines = path.read_text().splitlines()
    return [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path) -> Path:
    """Return a data/prepared folder of 500 MNIST-1D samples, made by the prepare stage."""
    root = _tiny(_scratch(tmp_path_factory.mktemp("prepare") / "repo"), prepared=None)
    shutil.copyfile(mlflow_template_db, root.parent / "mlflow.db")
    _ok(_stage(root, _env(f"sqlite:///{root.parent / 'mlflow.db'}"), "prepare"))
    return root / "data" / "prepared"


@pytest.fixture(scope="module")
def mll_run(
    tmp_path_factory: pytest.TempPathFactory, prepared: Path, mlflow_template_db: Path
) -> dict[str, Any]:
    """Run teacher_mll uninterrupted once; return its repo, env, stderr and metrics."""
    root = _tiny(_scratch(tmp_path_factory.mktemp("teacher") / "repo"), prepared)
    db = root.parent / "mlflow.db"
    shutil.copyfile(mlflow_template_db, db)
    env = _env(f"sqlite:///{db}")
    done = _ok(_stage(root, env, "teacher_mll"))
    return {
        "repo": root,
        "env": env,
        "uri": env["MLFLOW_TRACKING_URI"],
        "stderr": done.stderr,
        "metrics": _metrics(root, "mll"),
        "tsv": (root / "plots" / "teacher" / "mll.tsv").read_text(),
    }


def _check_metrics(metrics: dict[str, Any], epochs: int) -> None:
    assert metrics["validation"] == "passed"
    for key in ("val_acc", "test_acc", "test_ece", "val_ece"):
        assert 0.0 <= metrics[key] <= 1.0, key
    for key in ("val_cmi", "test_cmi"):
        assert math.isfinite(metrics[key]) and 0.0 <= metrics[key] < math.log(10), key
    assert metrics["epochs"] == epochs and 1 <= metrics["best_epoch"] <= epochs
    assert len(metrics["per_class_acc"]) == 10
    assert metrics["test_acc"] > 0.15  # better than chance on 10 classes after a few epochs


def _check_history(path: Path, metrics: dict[str, Any], epochs: int) -> None:
    rows = _tsv(path)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert {"lr", "train_loss", "train_ce", "val_acc", "val_cmi"} <= rows[0].keys()
    # The written model is the selected epoch's: its val figures are that row's (TSV: 6 digits).
    best = rows[metrics["best_epoch"] - 1]
    assert float(best["val_acc"]) == pytest.approx(metrics["val_acc"], rel=1e-5)
    assert float(best["val_cmi"]) == pytest.approx(metrics["val_cmi"], rel=1e-5)


def test_teacher_stages_write_checked_outputs_and_mlflow_runs(mll_run):
    from mlflow.tracking import MlflowClient

    repo, env = mll_run["repo"], mll_run["env"]
    # Only kdflow's own lines: no library warnings or INFO chatter on a stage's stderr.
    assert all(line.startswith("teacher_mll: ") for line in mll_run["stderr"].splitlines()), (
        mll_run["stderr"]
    )

    mcmi_done = _ok(_stage(repo, env, "teacher_mcmi"))

    assert all(line.startswith("teacher_mcmi: ") for line in mcmi_done.stderr.splitlines())
    meta = json.loads((repo / "data" / "prepared" / "meta.json").read_text())
    data_hash = "-".join(meta["hashes"][s][:16] for s in ("train", "val", "test"))
    mll, mcmi = mll_run["metrics"], _metrics(repo, "mcmi")
    for name, metrics, epochs in (("mll", mll, TEACHER_EPOCHS), ("mcmi", mcmi, MCMI_EPOCHS)):
        _check_metrics(metrics, epochs)
        _check_history(repo / "plots" / "teacher" / f"{name}.tsv", metrics, epochs)
        model, model_meta = load_model(
            repo / "models" / "teacher" / f"{name}.pt", expect={"data_hash": data_hash}
        )
        assert model_meta["arch"] == "cnn3" and model_meta["stage"] == f"teacher_{name}"
    # The fine-tune starts from the written MLL teacher: same weights, same val figures.
    assert mcmi["start_val_acc"] == mll["val_acc"]
    assert mcmi["start_val_cmi"] == pytest.approx(mll["val_cmi"], rel=1e-9)
    assert not (repo / "checkpoints").exists() or not any((repo / "checkpoints").iterdir())

    client = MlflowClient(tracking_uri=mll_run["uri"])
    experiment = client.get_experiment_by_name("kdflow")
    assert experiment is not None
    runs = {r.data.tags["kdflow.stage"]: r for r in client.search_runs([experiment.experiment_id])}
    for stage, epochs in (("teacher_mll", TEACHER_EPOCHS), ("teacher_mcmi", MCMI_EPOCHS)):
        run = runs[stage]
        assert run.info.status == "FINISHED"
        assert run.data.tags["kdflow.validation"] == "passed"
        assert run.data.metrics["test_acc"] == pytest.approx(
            (mll if stage == "teacher_mll" else mcmi)["test_acc"]
        )
        steps = {m.step for m in client.get_metric_history(run.info.run_id, "train_loss")}
        assert steps == set(range(1, epochs + 1))
    assert runs["teacher_mcmi"].data.params["mcmi.optim.epochs"] == str(MCMI_EPOCHS)


def test_sigkill_then_rerun_resumes_to_the_same_result(
    mll_run, prepared, repo_copy, stage_env, tracking_db
):
    repo = _tiny(repo_copy, prepared)
    checkpoint = repo / "checkpoints" / "teacher_mll.pt"

    # The stage prints an epoch's line only once that epoch's checkpoint is on disk.
    code, stderr = signal_after_epoch(
        [PYTHON, "-m", "stages.teacher_mll"], repo, stage_env, 2, signal.SIGKILL
    )

    assert code == -signal.SIGKILL, stderr
    assert checkpoint.is_file()
    assert not (repo / "models").exists()
    assert not (repo / "metrics").exists()
    assert not (repo / "plots").exists()

    rerun = _ok(_stage(repo, stage_env, "teacher_mll"))

    resumed = re.search(r"resuming from checkpoint after epoch (\d+)", rerun.stderr)
    assert resumed and 2 <= int(resumed.group(1)) < TEACHER_EPOCHS, rerun.stderr
    metrics = _metrics(repo, "mll")
    reference = mll_run["metrics"]
    # Wall time and the MLflow run id are in the untracked run record: the outputs are equal.
    assert metrics == reference
    assert (repo / "plots" / "teacher" / "mll.tsv").read_text() == mll_run["tsv"]
    model_file = Path("models") / "teacher" / "mll.pt"
    assert (repo / model_file).read_bytes() == (mll_run["repo"] / model_file).read_bytes()
    resumed_model, _ = load_model(repo / "models" / "teacher" / "mll.pt")
    reference_model, _ = load_model(mll_run["repo"] / "models" / "teacher" / "mll.pt")
    for name, tensor in reference_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name
    assert not checkpoint.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_is_one_line_and_exit_2(prepared, repo_copy, stage_env):
    repo = _tiny(repo_copy, prepared)
    _set_params(repo, {"runtime": {"device": "cuda"}})

    done = _stage(repo, stage_env, "teacher_mll")

    assert done.returncode == 2
    assert done.stderr.startswith("kdflow teacher_mll: error: runtime.device is 'cuda' but no CUDA")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert [p for p in OUTPUTS if (repo / p).exists()] == []


def test_mcmi_without_mll_teacher_is_one_line_and_exit_2(
    prepared, repo_copy, stage_env, tracking_db
):
    repo = _tiny(repo_copy, prepared)

    done = _stage(repo, stage_env, "teacher_mcmi")

    assert done.returncode == 2
    assert done.stderr == (
        "kdflow teacher_mcmi: error: model file models/teacher/mll.pt not found; "
        "run the stage that trains it first\n"
    )
    assert [p for p in OUTPUTS if (repo / p).exists()] == []
