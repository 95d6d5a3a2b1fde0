"""`kdflow audit` as users run it, on a real tiny pipeline and on tampered copies of it.

The tests work on a copy of the session's tiny pipeline (tests/conftest.py: 500 MNIST-1D
samples, cnn3 models, 2-epoch students, deterministic single-threaded CPU) with its MLflow
store and DVC cache. Each tampering test works on a further copy and points the audit at it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import copy_pipeline, pipeline_env, run_in_pipeline, set_params

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
DVC_CHECK = "dvc.lock matches workspace"
LINEAGE_CHECK = "every reported figure has an MLflow run with lineage"


def _uri(repo: Path) -> str:
    return f"sqlite:///{repo / 'mlflow.db'}"


def _audit(repo: Path, *args: str, cwd: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """Run `kdflow audit ARGS` on `repo`; return the process and its JSON report."""
    report = repo / "reports" / "audit.json"
    report.unlink(missing_ok=True)
    done = run_in_pipeline(repo, [str(VENV_BIN / "kdflow"), "audit", *args], cwd)
    assert report.is_file(), f"no audit.json:\n{done.stdout}\n{done.stderr}"
    return done, json.loads(report.read_text())


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


def _failed(done: subprocess.CompletedProcess, report: dict[str, Any], check: str) -> str:
    """Assert the audit failed on `check` (exit 1, FAIL verdict); return that check's detail."""
    assert done.returncode == 1, f"{done.stdout}\n{done.stderr}"
    assert "verdict: FAIL" in done.stdout
    assert report["passed"] is False
    verdict = _checks(report)[check]
    assert verdict["passed"] is False, verdict
    return verdict["detail"]


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return this module's copy of the tiny pipeline (the audit writes reports/audit.json)."""
    return copy_pipeline(tiny_pipeline["repo"], tmp_path_factory.mktemp("audit"))


@pytest.fixture
def tampered(pipeline: Path, tmp_path: Path) -> Path:
    """Return a copy of the pipeline's repository to tamper with (store and cache included)."""
    return copy_pipeline(pipeline, tmp_path)


def test_clean_pipeline_passes_and_records_the_environment(pipeline):
    # --root: the audit reads the named repository, not the working directory.
    done, report = _audit(pipeline, "--root", str(pipeline), cwd=pipeline.parent)

    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "verdict: PASS" in done.stdout
    assert report["passed"] is True
    checks = _checks(report)
    assert set(checks) == {DVC_CHECK, LINEAGE_CHECK}
    assert all(c["passed"] for c in checks.values()), checks
    assert checks[DVC_CHECK]["detail"] == "dvc status: clean"
    evaluated = json.loads((pipeline / "metrics" / "eval.json").read_text())["models"]
    assert checks[LINEAGE_CHECK]["detail"] == f"{len(evaluated)} models traced to MLflow runs"
    environment = report["environment"]
    packages = environment["packages"]
    assert packages["python"] == ".".join(map(str, sys.version_info[:3]))
    for name in ("torch", "mlflow", "dvc", "kdflow"):
        assert packages.get(name), name
    assert "cuda" in environment and isinstance(environment["cuda_available"], bool)
    assert environment["platform"] == sys.platform


def _rerun_check(stage: str) -> str:
    return f"rerun {stage} reproduces its outputs"


def _locked_outs(repo: Path, stage: str) -> str:
    locked = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][stage]
    return ", ".join(o["path"] for o in locked["outs"])


def test_an_edited_metrics_file_fails_the_dvc_and_lineage_checks(tampered):
    name = "mll-kd-full-s0"
    path = tampered / "metrics" / "distill" / f"{name}.json"
    metrics = json.loads(path.read_text())
    edited = 0.123456  # 100 test samples: a real accuracy is a multiple of 0.01
    metrics["test_acc"] = edited
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")

    # The rerun re-trains that student from its locked inputs: it reproduces dvc.lock's
    # bytes, so the edit is the workspace's, not the pipeline's.
    done, report = _audit(tampered, "--rerun", "distill@mll-kd-full-0")

    detail = _failed(done, report, DVC_CHECK)
    assert f"distill@mll-kd-full-0 (changed outs: metrics/distill/{name}.json)" in detail
    lineage = _failed(done, report, LINEAGE_CHECK)
    assert f"distill/{name}: metrics file test_acc {edited} ≠ MLflow run's " in lineage
    rerun = _checks(report)[_rerun_check("distill@mll-kd-full-0")]
    assert rerun["passed"] is True, rerun
    assert rerun["detail"].startswith(
        f"{_locked_outs(tampered, 'distill@mll-kd-full-0')} bit-identical to dvc.lock"
    )
    for reason in (detail, lineage):
        assert reason in done.stdout


def test_a_rerun_whose_validation_report_changes_names_the_file_and_field(tampered):
    # Code that writes one more field into validation.json: the tables stay the same.
    code = tampered / "kdflow" / "data" / "validation.py"
    text = code.read_text()
    anchor = '        "success": outcome["success"],\n'
    assert anchor in text
    code.write_text(text.replace(anchor, anchor + '        "extra": 1,\n', 1))

    done, report = _audit(tampered, "--rerun", "prepare")

    rerun = _failed(done, report, _rerun_check("prepare"))
    assert rerun.startswith("4 difference(s): data/prepared/validation.json: splits.all.extra ")
    assert "present in one run only" in rerun
    assert "parquet" not in rerun and "meta.json" not in rerun
    assert rerun in done.stdout


def test_a_replaced_model_file_fails(tampered):
    teacher = tampered / "models" / "teacher"
    shutil.copyfile(teacher / "mcmi.pt", teacher / "mll.pt")

    done, report = _audit(tampered)

    detail = _failed(done, report, DVC_CHECK)
    assert "models/teacher/mll.pt" in detail
    assert "teacher_mll (changed outs: " in detail  # the stage whose output was replaced
    assert detail in done.stdout
    assert _checks(report)[LINEAGE_CHECK]["passed"] is True


def test_a_param_changed_without_rerunning_fails(tampered):
    raw = yaml.safe_load((tampered / "params.yaml").read_text())
    set_params(tampered, {"distill": {"optim": {"lr": raw["distill"]["optim"]["lr"] * 2}}})

    done, report = _audit(tampered)

    detail = _failed(done, report, DVC_CHECK)
    # Every student (distilled and baseline) reads distill.optim; the report does not.
    locked = yaml.safe_load((tampered / "dvc.lock").read_text())["stages"]
    students = [name for name in locked if name.startswith(("distill@", "baseline@"))]
    assert len(students) == 6  # 2 teachers × 2 protocols + 2 baselines, one seed
    assert detail.startswith(f"{len(students)} stage(s) changed: ")
    assert "report (" not in detail
    assert "(changed deps: params.yaml (distill.optim.lr))" in detail
    assert detail in done.stdout
    assert _checks(report)[LINEAGE_CHECK]["passed"] is True


def test_a_deleted_mlflow_run_fails_lineage_while_dvc_is_clean(tampered):
    from mlflow.tracking import MlflowClient

    model = "distill/mcmi-kd-full-s0"
    metrics = json.loads((tampered / "metrics" / f"{model}.json").read_text())
    # dvc repro ran the stage: its run record has DVC's stage name.
    record = tampered / ".kdflow" / "runs" / "distill@mcmi-kd-full-0.json"
    run_id = json.loads(record.read_text())["mlflow_run_id"]
    assert json.loads(record.read_text())["stage"] == metrics["stage"]
    MlflowClient(tracking_uri=_uri(tampered)).delete_run(run_id)

    done, report = _audit(tampered)

    assert _checks(report)[DVC_CHECK]["passed"] is True  # nothing DVC tracks has changed
    detail = _failed(done, report, LINEAGE_CHECK)
    assert f"{model}: MLflow run {run_id} is deleted" in detail
    assert detail in done.stdout


def test_rerun_of_a_stage_is_bit_identical(pipeline):
    model = pipeline / "models" / "teacher" / "mll.pt"
    before = (model.read_bytes(), model.stat().st_mtime_ns)

    done, report = _audit(pipeline, "--rerun", "teacher_mll")

    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert report["passed"] is True
    rerun = _checks(report)[_rerun_check("teacher_mll")]
    assert rerun == {
        "name": _rerun_check("teacher_mll"),
        "passed": True,
        "detail": f"{_locked_outs(pipeline, 'teacher_mll')} bit-identical to dvc.lock "
        "(rerun with 1 torch thread(s), as recorded)",
    }
    assert "models/teacher/mll.pt" in rerun["detail"]  # the model file too, byte for byte
    assert "bit-identical" in done.stdout
    assert (model.read_bytes(), model.stat().st_mtime_ns) == before  # ran in a scratch copy


def test_rerun_of_prepare_reproduces_the_locked_folder_md5(pipeline):
    from kdflow.audit.checks import dvc_md5

    locked = yaml.safe_load((pipeline / "dvc.lock").read_text())["stages"]["prepare"]["outs"]
    # Computed as DVC does: the md5 of the folder's listing, with ".dir".
    for out in locked:
        assert dvc_md5(pipeline / out["path"]) == out["md5"], out["path"]

    done, report = _audit(pipeline, "--rerun", "prepare")

    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    rerun = _checks(report)[_rerun_check("prepare")]
    assert rerun["detail"] == f"{_locked_outs(pipeline, 'prepare')} bit-identical to dvc.lock"


def test_rerun_uses_the_thread_count_the_stage_ran_with(tampered):
    # As under the flow: the stage ran with its share of the cores (OMP_NUM_THREADS=1) and
    # runtime.threads left at 0. CPU results depend on the thread count, so a rerun with
    # torch's default (2 on a 2-core machine) would differ in the last bits.
    set_params(tampered, {"runtime": {"threads": 0}})
    env = pipeline_env(tampered) | {"OMP_NUM_THREADS": "1"}
    repro = subprocess.run(
        ["dvc", "repro", "teacher_mll"], cwd=tampered, env=env, capture_output=True, text=True
    )
    assert repro.returncode == 0, repro.stderr
    assert json.loads((tampered / "metrics/teacher/mll.json").read_text())["torch_threads"] == 1

    _, report = _audit(tampered, "--rerun", "teacher_mll")  # OMP_NUM_THREADS not set here

    rerun = _checks(report)[_rerun_check("teacher_mll")]
    assert rerun["passed"] is True, rerun
    assert rerun["detail"].endswith(
        "bit-identical to dvc.lock (rerun with 1 torch thread(s), as recorded)"
    )


def test_rerun_of_an_unknown_stage_names_the_known_ones(pipeline):
    done, report = _audit(pipeline, "--rerun", "nosuchstage")

    detail = _failed(done, report, _rerun_check("nosuchstage"))
    locked = yaml.safe_load((pipeline / "dvc.lock").read_text())["stages"]
    assert detail == f"stage 'nosuchstage' is not in dvc.lock; known: {', '.join(sorted(locked))}"
    assert {"teacher_mll", "evaluate", "report"} <= set(locked)
    assert detail in done.stdout
    # The other checks still ran and passed: only the rerun failed.
    assert _checks(report)[DVC_CHECK]["passed"] is True
    assert _checks(report)[LINEAGE_CHECK]["passed"] is True
