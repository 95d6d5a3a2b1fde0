"""The prepare stage as users run it: one-line errors, `dvc repro`, `dvc push`, the MLflow run."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kdflow.config import load_params, params_hash

pytestmark = pytest.mark.slow

SPLITS = ("train", "val", "test")


def _set_params(repo: Path, **data: Any) -> None:
    path = repo / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["data"].update(data)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _prepare(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stages.prepare", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _dvc(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _assert_no_outputs(repo: Path) -> None:
    assert not (repo / "data" / "prepared").exists()
    assert not (repo / "metrics").exists()
    leftovers = list((repo / "data").glob(".prepared*")) if (repo / "data").exists() else []
    assert leftovers == []


def _prepare_runs(tracking_uri: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("kdflow")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return [r for r in runs if r.data.tags.get("kdflow.stage") == "prepare"]


def test_missing_cifar_folder_is_one_line_and_exit_2(repo_copy, stage_env, tracking_uri):
    # A fresh tracking store: its creation must not add lines to the error output either.
    _set_params(repo_copy, source="cifar10", path="/nonexistent")

    done = _prepare(repo_copy, stage_env)

    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("kdflow prepare: error: data.path '/nonexistent' does not exist")
    assert "cifar-10-batches-bin/" in lines[0] and "cifar-10-batches-py/" in lines[0]
    assert "Traceback" not in done.stderr
    _assert_no_outputs(repo_copy)
    runs = _prepare_runs(tracking_uri)
    assert [r.info.status for r in runs] == ["FAILED"]  # the attempt is on record

    debug = _prepare(repo_copy, stage_env, "--debug")

    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1] == lines[0]
    _assert_no_outputs(repo_copy)


def test_bad_param_is_one_line_and_exit_2(repo_copy, stage_env):
    _set_params(repo_copy, val_fraction=1.5)

    done = _prepare(repo_copy, stage_env)

    assert done.returncode == 2
    assert done.stderr == (
        "kdflow prepare: error: params: data.val_fraction = 1.5 is invalid: "
        "Input should be less than 1\n"
    )
    _assert_no_outputs(repo_copy)

    debug = _prepare(repo_copy, stage_env, "--debug")

    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert "kdflow.errors.KdflowError" in debug.stderr
    _assert_no_outputs(repo_copy)


def _outputs(repo: Path) -> tuple[dict[str, Any], dict[str, int]]:
    prepared = repo / "data" / "prepared"
    meta = json.loads((prepared / "meta.json").read_text())
    mtimes = {s: (prepared / f"{s}.parquet").stat().st_mtime_ns for s in SPLITS}
    return meta, mtimes


def test_dvc_repro_runs_caches_reruns_and_pushes(repo_copy, stage_env, tracking_db, tmp_path):
    from mlflow.tracking import MlflowClient

    _set_params(repo_copy, num_samples=1000)

    first = _dvc(repo_copy, stage_env, "repro", "prepare")

    assert "Running stage 'prepare'" in first.stdout
    stage_log = first.stdout + first.stderr
    assert "prepare: mnist1d: 720/80/200 rows → data/prepared" in stage_log
    assert "ephemeral docs site" not in stage_log  # library INFO chatter stays out
    meta, mtimes = _outputs(repo_copy)
    prepared = repo_copy / "data" / "prepared"
    for split in SPLITS:
        digest = hashlib.sha256((prepared / f"{split}.parquet").read_bytes()).hexdigest()
        assert meta["hashes"][split] == digest
    assert sum(meta["rows"].values()) == 1000
    metrics = json.loads((repo_copy / "metrics" / "prepare.json").read_text())
    assert metrics["rows"] == meta["rows"] and metrics["validation"] == "passed"
    assert (repo_copy / "dvc.lock").is_file()

    second = _dvc(repo_copy, stage_env, "repro", "prepare")

    assert "Stage 'prepare' didn't change, skipping" in second.stdout
    assert "Running stage" not in second.stdout
    assert _outputs(repo_copy) == (meta, mtimes)
    assert (
        "Data and pipelines are up to date."
        in _dvc(repo_copy, stage_env, "status", "prepare").stdout
    )

    _set_params(repo_copy, seed=1)
    third = _dvc(repo_copy, stage_env, "repro", "prepare")

    assert "Running stage 'prepare'" in third.stdout
    reseeded, _ = _outputs(repo_copy)
    for split in SPLITS:
        assert reseeded["hashes"][split] != meta["hashes"][split]
    assert (
        "Data and pipelines are up to date."
        in _dvc(repo_copy, stage_env, "status", "prepare").stdout
    )

    remote = tmp_path / "remote"
    _dvc(repo_copy, stage_env, "remote", "add", "-f", "-d", "local", str(remote))
    _dvc(repo_copy, stage_env, "push", "prepare")
    assert len([p for p in remote.rglob("*") if p.is_file()]) >= 6  # 5 prepared files + metrics

    runs = _prepare_runs(tracking_db)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]  # the skip logged nothing
    run = runs[-1]
    tags = run.data.tags
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo_copy, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", tags["kdflow.git_commit"])
    assert tags["kdflow.git_commit"] == head
    assert tags["kdflow.params_hash"] == params_hash(load_params(repo_copy / "params.yaml"))
    assert tags["kdflow.validation"] == "passed"
    assert {tags[f"kdflow.output.{s}"] for s in SPLITS} == set(reseeded["hashes"].values())
    assert run.data.params["data.seed"] == "1"
    client = MlflowClient(tracking_uri=tracking_db)
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "validation")]
    assert artifacts == ["validation/validation.json"]
    local = client.download_artifacts(run.info.run_id, "validation/validation.json", str(tmp_path))
    assert json.loads(Path(local).read_text())["success"] is True


def test_two_runs_write_byte_identical_outputs_and_keep_run_facts_aside(repo_copy, stage_env):
    from mlflow.tracking import MlflowClient

    _set_params(repo_copy, num_samples=500)
    outputs = [repo_copy / "metrics" / "prepare.json"]
    outputs += [repo_copy / "data" / "prepared" / f"{s}.parquet" for s in SPLITS]
    outputs += [repo_copy / "data" / "prepared" / n for n in ("meta.json", "validation.json")]

    records = []
    runs = []
    for _ in range(2):
        done = _prepare(repo_copy, stage_env)
        assert done.returncode == 0, done.stderr
        runs.append({p.relative_to(repo_copy): p.read_bytes() for p in outputs})
        records.append(json.loads((repo_copy / ".kdflow" / "runs" / "prepare.json").read_text()))

    assert runs[0] == runs[1]
    metrics = json.loads(runs[0][Path("metrics/prepare.json")])
    assert set(metrics) == {"rows", "class_counts", "validation"}
    # The run id and duration are in the untracked run record and in MLflow.
    assert records[0]["mlflow_run_id"] != records[1]["mlflow_run_id"]
    client = MlflowClient(tracking_uri=stage_env["MLFLOW_TRACKING_URI"])
    for record in records:
        assert record["stage"] == "prepare" and record["seconds"] > 0
        run = client.get_run(record["mlflow_run_id"])
        assert run.data.metrics["seconds"] == record["seconds"]
