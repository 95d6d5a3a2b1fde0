"""Tracking services that are down or die: fail fast, fall back, or finish without them.

The Prefect side (an API that does not answer fails the flow command in one line) is tested in
tests/flows/test_pipeline_flow.py::test_prefect_api_that_does_not_answer_fails_fast_in_one_line.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.flows.servers import free_port, start, stop, wait_healthy
from tests.helpers import set_params
from tests.robustness.helpers import (
    DISTILL_ARGS,
    DISTILL_NAME,
    DISTILL_RECORD,
    VENV_BIN,
    comparable,
    copy_workspace,
    make_env,
    read_json,
    run,
    snapshot,
    stage_command,
)

pytestmark = pytest.mark.slow


def test_unanswered_tracking_server_fails_before_training_in_one_line(
    workspace: Path, tmp_path: Path
) -> None:
    repo = copy_workspace(workspace, tmp_path / "repo")
    set_params(repo, {"tracking": {"required": True}})
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    before = snapshot(repo)

    started = time.monotonic()
    done = run(stage_command("distill", *DISTILL_ARGS), repo, make_env(uri))

    assert time.monotonic() - started < 15
    assert done.returncode == 2
    assert done.stderr == (
        f"kdflow distill: error: MLflow tracking server {uri} does not answer; start it "
        "(make up) or set tracking.required: false to log to the local SQLite store\n"
    )
    assert snapshot(repo) == before
    assert not (repo / "checkpoints").exists()  # training never started


def test_tracking_not_required_falls_back_to_the_local_store_with_a_warning(
    distill_reference: dict[str, Any],
) -> None:
    from mlflow.tracking import MlflowClient

    repo, uri = distill_reference["repo"], distill_reference["uri"]
    local = f"sqlite:///{(repo / 'mlflow.db').resolve()}"

    warning = f"MLflow server {uri} does not answer; logging to {local} instead"
    assert warning in distill_reference["stderr"].splitlines()
    assert (repo / "models" / "distill" / f"{DISTILL_NAME}.pt").is_file()
    client = MlflowClient(tracking_uri=local)
    experiment = client.get_experiment_by_name("kdflow")
    assert experiment is not None
    (stage_run,) = client.search_runs([experiment.experiment_id])
    assert stage_run.info.status == "FINISHED"
    assert stage_run.info.run_id == distill_reference["run_id"]
    assert stage_run.data.metrics["test_acc"] == distill_reference["metrics"]["test_acc"]


def test_server_dying_mid_run_loses_no_output_and_reports_what_was_not_logged(
    workspace: Path, distill_reference: dict[str, Any], tmp_path: Path, mlflow_template_db: Path
) -> None:
    from mlflow.tracking import MlflowClient

    store = tmp_path / "server.db"
    shutil.copyfile(mlflow_template_db, store)  # schema ready: the server starts sooner
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    args = [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--backend-store-uri", f"sqlite:///{store}", "--workers", "1"]
    log = tmp_path / "server.log"
    server = start(args, make_env(uri), log, cwd=tmp_path)  # its artifacts go under tmp_path
    repo = copy_workspace(workspace, tmp_path / "repo")
    try:
        wait_healthy(f"{uri}/health", server, log, timeout=120)
        proc = subprocess.Popen(
            stage_command("distill", *DISTILL_ARGS),
            cwd=repo,
            env=make_env(uri),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # epoch 1's metrics are sent before its line is written
            seen.append(line)
            if re.search(r": epoch 1/", line):
                break
        os.killpg(server.pid, signal.SIGKILL)  # the server dies, with no goodbye
        server.wait(timeout=30)
        _, rest = proc.communicate(timeout=180)
    finally:
        stop(server)
    stderr = "".join(seen) + rest

    assert proc.returncode == 0, stderr
    outputs = {
        kind: repo / kind / "distill" / f"{DISTILL_NAME}.{suffix}"
        for kind, suffix in (("models", "pt"), ("metrics", "json"), ("plots", "tsv"))
    }
    assert all(path.is_file() for path in outputs.values())
    metrics = read_json(outputs["metrics"])
    assert comparable(metrics) == comparable(distill_reference["metrics"])
    run_id = read_json(repo / DISTILL_RECORD)["mlflow_run_id"]
    assert outputs["plots"].read_text() == distill_reference["tsv"]
    lines = stderr.splitlines()
    assert sum("MLflow logging failed" in line for line in lines) == 1, stderr
    report = re.fullmatch(
        rf"MLflow run {run_id} at {re.escape(uri)} is missing (\d+) logged "
        r"item\(s\) \((.+)\) and was not closed there \(it shows RUNNING\); "
        r"the stage's outputs are written",
        lines[-1],
    )
    assert report, stderr
    assert "metrics" in report.group(2) and "artifact" in report.group(2)
    # What reached the server before it died is in its store; the run could not be closed.
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    run_info = client.get_run(run_id)
    assert run_info.info.status == "RUNNING"
    steps = {m.step for m in client.get_metric_history(run_info.info.run_id, "train_loss")}
    assert 1 in steps
