"""Interrupted runs of distill and of the assembly stage `meta`: killed, stopped, resumed.

SIGKILL leaves the last per-epoch checkpoint; SIGTERM and SIGINT unwind in order (exit 143 and
130, one line, no temp file, the MLflow run KILLED). Every rerun resumes from the checkpoint
and the final outputs equal an uninterrupted run's (CPU, deterministic). teacher_mll's own
SIGKILL test is in tests/stages/test_teacher_stages.py.
"""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import signal_after_epoch
from tests.robustness.helpers import (
    DISTILL_ARGS,
    DISTILL_EPOCHS,
    DISTILL_NAME,
    META_EPOCHS,
    comparable,
    copy_workspace,
    make_env,
    ok,
    read_json,
    run,
    snapshot,
    stage_command,
)

pytestmark = pytest.mark.slow

RESUMED = re.compile(r"resuming from checkpoint after epoch (\d+)")


def _resumed_after(stderr: str) -> int:
    found = RESUMED.search(stderr)
    assert found, f"the stage did not resume:\n{stderr}"
    return int(found.group(1))


def _outputs_of(repo: Path, kind: str, name: str) -> dict[str, Path]:
    return {
        "model": repo / "models" / kind / f"{name}.pt",
        "metrics": repo / "metrics" / kind / f"{name}.json",
        "plots": repo / "plots" / kind / f"{name}.tsv",
    }


def _assert_same_result(outputs: dict[str, Path], reference: dict[str, Path]) -> None:
    """The resumed run's metrics, per-epoch table and weights equal the uninterrupted run's."""
    assert comparable(read_json(outputs["metrics"])) == comparable(read_json(reference["metrics"]))
    assert outputs["plots"].read_text() == reference["plots"].read_text()
    resumed = torch.load(outputs["model"], weights_only=True)
    uninterrupted = torch.load(reference["model"], weights_only=True)
    assert resumed["meta"]["params_hash"] == uninterrupted["meta"]["params_hash"]
    assert resumed["state_dict"].keys() == uninterrupted["state_dict"].keys()
    for name, tensor in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name


def _mlflow_statuses(tracking_uri: str, stage: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("kdflow")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`kdflow.stage` = '{stage}'",
        order_by=["attributes.start_time ASC"],
    )
    return [r.info.status for r in runs]


def test_distill_survives_kill_term_and_int_and_resumes_to_the_same_result(
    workspace: Path,
    distill_reference: dict[str, Any],
    tmp_path: Path,
    stage_env: dict[str, str],
    tracking_db: str,
) -> None:
    repo = copy_workspace(workspace, tmp_path / "repo")
    command = stage_command("distill", *DISTILL_ARGS)
    checkpoint = repo / "checkpoints" / f"distill@{DISTILL_NAME}.pt"
    untouched = snapshot(repo)  # no distill outputs yet; every interruption must keep it so
    assert DISTILL_EPOCHS >= 8

    code, stderr = signal_after_epoch(command, repo, stage_env, 1, signal.SIGKILL)

    assert code == -signal.SIGKILL, stderr
    assert checkpoint.is_file()
    after_kill = snapshot(repo)  # may hold a temp file, if the kill came during a save
    assert {k: v for k, v in after_kill.items() if not k.startswith("checkpoints/")} == untouched

    code, stderr = signal_after_epoch(command, repo, stage_env, 3, signal.SIGTERM)

    assert code == 128 + signal.SIGTERM, stderr
    first_resume = _resumed_after(stderr)
    assert first_resume >= 1
    assert stderr.splitlines()[-1] == (
        "kdflow distill: terminated (SIGTERM); outputs untouched, rerun to resume"
    )
    after_term = snapshot(repo)
    # Only the checkpoint changed, and no temp file of an interrupted write is left anywhere.
    assert set(after_term) == set(after_kill)
    assert {k: v for k, v in after_term.items() if not k.startswith("checkpoints/")} == untouched

    code, stderr = signal_after_epoch(command, repo, stage_env, 5, signal.SIGINT)

    assert code == 130, stderr
    second_resume = _resumed_after(stderr)
    assert second_resume >= 3 and first_resume < second_resume
    assert stderr.splitlines()[-1] == (
        "kdflow distill: interrupted; outputs untouched, rerun to resume"
    )
    assert set(snapshot(repo)) == set(after_term)

    final = ok(run(command, repo, stage_env))

    last_resume = _resumed_after(final.stderr)
    assert 5 <= last_resume < DISTILL_EPOCHS and second_resume < last_resume
    _assert_same_result(
        _outputs_of(repo, "distill", DISTILL_NAME),
        _outputs_of(distill_reference["repo"], "distill", DISTILL_NAME),
    )
    assert not checkpoint.exists()
    # A killed process cannot close its run; SIGTERM and SIGINT close theirs as KILLED.
    assert _mlflow_statuses(tracking_db, f"distill@{DISTILL_NAME}") == [
        "RUNNING",
        "KILLED",
        "KILLED",
        "FINISHED",
    ]


@pytest.fixture(scope="module")
def meta_reference(
    workspace: Path, tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path
) -> dict[str, Any]:
    """Run the assembly stage `meta` once, uninterrupted; return its repo."""
    repo = copy_workspace(workspace, tmp_path_factory.mktemp("meta-reference") / "repo")
    shutil.copyfile(mlflow_template_db, repo.parent / "mlflow.db")
    ok(run(stage_command("meta"), repo, make_env(f"sqlite:///{repo.parent / 'mlflow.db'}")))
    return {"repo": repo}


def test_meta_killed_twice_resumes_to_the_same_result(
    workspace: Path,
    meta_reference: dict[str, Any],
    tmp_path: Path,
    stage_env: dict[str, str],
    tracking_db: str,
) -> None:
    repo = copy_workspace(workspace, tmp_path / "repo")
    command = stage_command("meta")
    untouched = snapshot(repo)
    assert META_EPOCHS >= 5

    first, first_err = signal_after_epoch(command, repo, stage_env, 1, signal.SIGKILL)
    second, second_err = signal_after_epoch(command, repo, stage_env, 3, signal.SIGKILL)

    assert first == second == -signal.SIGKILL, first_err + second_err
    assert (repo / "checkpoints" / "meta@s0.pt").is_file()
    assert _resumed_after(second_err) >= 1
    assert {k: v for k, v in snapshot(repo).items() if not k.startswith("checkpoints/")} == (
        untouched
    )

    final = ok(run(command, repo, stage_env))

    assert 3 <= _resumed_after(final.stderr) < META_EPOCHS
    _assert_same_result(
        _outputs_of(repo, "assembly", "meta-s0"),
        _outputs_of(meta_reference["repo"], "assembly", "meta-s0"),
    )
    assert not (repo / "checkpoints" / "meta@s0.pt").exists()
