"""The distill stage as users run it: students of both teachers, both protocols, the baseline.

One module-wide scratch repository runs prepare, teacher_mll and teacher_mcmi once (500
MNIST-1D samples, a 3-epoch cnn3 teacher) and four 2-epoch students, the independent ones
side by side, each stage with its own MLflow store. The error cases run in fresh scratch copies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kdflow.losses import METHODS
from kdflow.train.checkpoint import load_model
from tests.helpers import StageProcesses
from tests.helpers import set_params as _set_params

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DISTILL_EPOCHS = 2
FEWSHOT_FRACTION = 0.1
OMIT = [9]
# Tiny and single-threaded: on a loaded machine idle torch threads slow these models 10-100×.
TINY = {
    "data": {"num_samples": 500},
    # Determinism is the teacher stage tests' business; torch.use_deterministic_algorithms
    # imports torch._inductor, about 2 s of each stage process here.
    "runtime": {"device": "cpu", "threads": 1, "deterministic": False},
    "teacher": {"model": "cnn3", "optim": {"epochs": 3, "batch_size": 64}},
    "mcmi": {"optim": {"epochs": 1, "batch_size": 64}},
    "distill": {
        "student": "cnn3",
        "methods": ["kd", "dkd"],
        "protocol_params": {"fewshot": {"fraction": FEWSHOT_FRACTION}, "zeroshot": {"omit": OMIT}},
        "method_params": {"dkd": {"warmup": 1}},
        "optim": {"epochs": DISTILL_EPOCHS, "batch_size": 64},
    },
}
RUNS = [  # teacher, method, protocol, seed
    ("mll", "kd", "fewshot", 0),
    ("mcmi", "kd", "fewshot", 0),
    ("mll", "dkd", "zeroshot", 0),
    ("none", "none", "zeroshot", 0),
]
OUTPUTS = ("models", "metrics", "plots", "checkpoints")


def _stage(
    repo: Path, env: dict[str, str], name: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", f"stages.{name}", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _name(teacher: str, method: str, protocol: str, seed: int) -> str:
    return f"{teacher}-{method}-{protocol}-s{seed}"


def _distill_args(teacher: str, method: str, protocol: str, seed: int) -> list[str]:
    return ["--teacher", teacher, "--method", method, "--protocol", protocol, "--seed", str(seed)]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path) -> Path:
    """Return a scratch repository after prepare, both teachers and the four students in RUNS."""
    repo = tmp_path_factory.mktemp("distill") / "repo"
    repo.mkdir()
    shutil.copy2(REPO / "params.yaml", repo / "params.yaml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tree in ("kdflow", "stages"):
        shutil.copytree(REPO / tree, repo / tree, ignore=ignore)
    _set_params(repo, TINY)
    stages = StageProcesses(repo, mlflow_template_db)
    try:
        stages.wait(stages.start("prepare"))
        stages.wait(stages.start("teacher_mll"))
        # Single-threaded processes side by side: what needs only the MLL teacher runs while
        # the MCMI fine-tune does, and the MCMI student starts once its teacher is written.
        mcmi = stages.start("teacher_mcmi")
        students = [stages.start("distill", *_distill_args(*r)) for r in RUNS if r[0] != "mcmi"]
        stages.wait(mcmi)
        students += [stages.start("distill", *_distill_args(*r)) for r in RUNS if r[0] == "mcmi"]
        stages.wait(*students)
    finally:
        stages.stop()
    return repo


def _metrics(repo: Path, run: tuple[str, str, str, int]) -> dict[str, Any]:
    return json.loads((repo / "metrics" / "distill" / f"{_name(*run)}.json").read_text())


def test_students_write_checked_metrics_and_loadable_models(pipeline):
    meta = json.loads((pipeline / "data" / "prepared" / "meta.json").read_text())
    num_classes = meta["num_classes"]
    train_counts = meta["class_counts"]["train"]
    for run in RUNS:
        metrics = _metrics(pipeline, run)
        assert metrics["validation"] == "passed", run
        for key in ("test_acc", "val_acc", "test_ece", "val_ece"):
            assert 0.0 <= metrics[key] <= 1.0, (run, key)
        assert len(metrics["per_class_acc"]) == num_classes, run
        assert all(0.0 <= a <= 1.0 for a in metrics["per_class_acc"]), run
        assert metrics["epochs"] == DISTILL_EPOCHS, run
        assert (metrics["teacher"], metrics["method"], metrics["protocol"], metrics["seed"]) == run
        if run[2] == "fewshot":
            expected = sum(max(1, round(FEWSHOT_FRACTION * n)) for n in train_counts)
        else:
            expected = sum(n for c, n in enumerate(train_counts) if c not in OMIT)
        assert metrics["train_size"] == expected, run

        path = pipeline / "models" / "distill" / f"{_name(*run)}.pt"
        state = torch.load(path, weights_only=True, map_location="cpu")
        assert isinstance(state, dict)
        model, model_meta = load_model(path)
        assert model_meta["arch"] == "cnn3" and model_meta["num_classes"] == num_classes
        assert model_meta["stage"] == f"distill@{_name(*run)}"
        x = torch.zeros(2, *meta["input_shape"])
        assert model.eval()(x).shape == (2, num_classes)
        assert (pipeline / "plots" / "distill" / f"{_name(*run)}.tsv").is_file()
    # The resumable checkpoints are removed once a run has written its outputs.
    assert not any((pipeline / "checkpoints").glob("distill@*"))


def test_fewshot_students_of_both_teachers_see_the_same_subset(pipeline):
    mll, mcmi = _metrics(pipeline, RUNS[0]), _metrics(pipeline, RUNS[1])

    assert mll["subset_hash"] == mcmi["subset_hash"]
    assert mll["train_size"] == mcmi["train_size"]
    assert "omitted_acc" not in mll


def test_zeroshot_students_report_omitted_class_accuracy(pipeline):
    dkd, baseline = _metrics(pipeline, RUNS[2]), _metrics(pipeline, RUNS[3])

    for metrics in (dkd, baseline):
        assert metrics["omit"] == OMIT
        assert 0.0 <= metrics["omitted_acc"] <= 1.0
        # One omitted class: its accuracy is that class's entry of the per-class accuracy.
        assert metrics["omitted_acc"] == pytest.approx(metrics["per_class_acc"][OMIT[0]])
    # Without a teacher nothing ever pushes the omitted class's logit up.
    assert baseline["omitted_acc"] == 0.0
    assert dkd["subset_hash"] == baseline["subset_hash"]  # zeroshot subsets ignore the teacher


@pytest.mark.parametrize(
    ("override", "args", "message"),
    [
        (
            {"distill": {"methods": ["kd", "foo"]}},
            ("mll", "kd", "full", 0),
            "params: distill: unknown method(s) 'foo' in distill.methods; known: "
            + ", ".join(METHODS.names()),
        ),
        (
            {"distill": {"protocol_params": {"zeroshot": {"omit": [12]}}}},
            ("none", "none", "zeroshot", 0),
            "distill.protocol_params.zeroshot.omit [12]: class index out of range; "
            "this data has classes 0..9",
        ),
        (
            {},
            ("none", "kd", "full", 0),
            "--teacher none goes with --method none (the no-teacher baseline)",
        ),
    ],
    ids=["unknown-method", "omit-out-of-range", "teacher-none-with-kd"],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    pipeline, repo_copy, stage_env, tracking_db, override, args, message
):
    _set_params(repo_copy, TINY)
    _set_params(repo_copy, override)
    shutil.copytree(pipeline / "data" / "prepared", repo_copy / "data" / "prepared")

    done = _stage(repo_copy, stage_env, "distill", *_distill_args(*args))

    assert done.returncode == 2, done.stderr
    assert done.stderr == f"kdflow distill: error: {message}\n"
    assert [p for p in OUTPUTS if (repo_copy / p).exists()] == []
