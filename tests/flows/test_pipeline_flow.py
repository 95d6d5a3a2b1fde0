"""The pipeline flow on toy DVC pipelines against a real Prefect server.

Parallel stages, retries, run-cache sharing between two checkouts, failure isolation and
a Prefect API that does not answer. The flow is generic over DVC pipelines, so toy stages
(tests/flows/toy.py) stand in for training; the real pipeline runs in test_deployment.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.flows.conftest import flow_env_for
from tests.flows.servers import PrefectApi, free_port, prefect_env
from tests.flows.toy import (
    clone,
    dvc,
    entries,
    env_for_toys,
    flow_run_id,
    make_toy_repo,
    pipeline_runs,
    run_flow,
    runs_of,
    stage,
)

pytestmark = [
    pytest.mark.slow,
    # pygtrie deprecations inside DVC's own graph code, not ours.
    pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning"),
]

# a ─┬─ b@x ─┬─ c
#    ├─ b@y ─┘
#    └─ flaky
DIAMOND = {
    "a": stage("a"),
    "b": {
        "foreach": ["x", "y"],
        "do": {
            "cmd": "python step.py b@${item} out/b-${item}.txt out/a.txt",
            "deps": ["step.py", "out/a.txt"],
            "outs": ["out/b-${item}.txt"],
        },
    },
    "c": {
        "cmd": "python step.py c out/c.txt out/b-x.txt out/b-y.txt",
        "deps": ["step.py", "out/b-x.txt", "out/b-y.txt"],
        "outs": ["out/c.txt"],
    },
    "flaky": stage("flaky", "a"),
}
DIAMOND_OUTS = ("a", "b-x", "b-y", "c", "flaky")
SLEEP = "3"  # seconds b@x and b@y each take: long enough to see them overlap on a busy box


def _ok(done):
    assert done.returncode == 0, f"flow failed:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    return done


def _interval(run: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(run["start_time"]), datetime.fromisoformat(run["end_time"])


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory,
    prefect_api: str,
    prefect_home: Path,
    module_tracking_db: str,
) -> SimpleNamespace:
    """Run the flow in one checkout, then in a second one sharing the same DVC remote."""
    base = tmp_path_factory.mktemp("toy-shared")
    origin = make_toy_repo(base / "origin", DIAMOND)
    log = base / "stage-runs.jsonl"
    env = env_for_toys(
        flow_env_for(prefect_home, prefect_api, base, module_tracking_db),
        log,
        slow="b@x,b@y",
        sleep=SLEEP,
        flaky="flaky",
    )
    env.pop("OMP_NUM_THREADS", None)  # the flow sizes each stage's thread pool itself
    remote = base / "remote"
    options = ("--remote", str(remote), "--max-parallel", "2", "--retry-delay", "0")
    first, second = clone(origin, base / "first"), clone(origin, base / "second")

    started = time.monotonic()
    first_run = run_flow(first, env, *options, "--retries", "1", "--gpus", "0,1")
    first_seconds = time.monotonic() - started
    after_first = entries(log)
    first_id = flow_run_id(module_tracking_db)

    second_run = run_flow(second, env, *options, "--retries", "0")
    return SimpleNamespace(
        env=env,
        log=log,
        first=first,
        second=second,
        first_run=first_run,
        first_seconds=first_seconds,
        first_id=first_id,
        after_first=after_first,
        second_run=second_run,
        second_id=flow_run_id(module_tracking_db),
        tracking_uri=module_tracking_db,
    )


def test_independent_stages_run_at_the_same_time(shared, prefect: PrefectApi):
    _ok(shared.first_run)
    assert prefect.flow_run(shared.first_id)["state_type"] == "COMPLETED"

    # The stage commands' own clocks: b@y started before b@x ended, and vice versa.
    (bx,), (by,) = runs_of(shared.log, "b@x"), runs_of(shared.log, "b@y")
    assert by["start"] < bx["end"] and bx["start"] < by["end"], (bx, by)
    # Prefect's view of the same: the two task runs' intervals overlap.
    tasks = prefect.task_runs(shared.first_id)
    (x_start, x_end), (y_start, y_end) = _interval(tasks["b@x"]), _interval(tasks["b@y"])
    assert y_start < x_end and x_start < y_end
    assert {name: run["state_type"] for name, run in tasks.items()} == {
        name: "COMPLETED" for name in ("a", "b@x", "b@y", "c", "flaky")
    }
    # Each b stage sleeps SLEEP seconds; run one after the other they would need twice that.
    assert (max(x_end, y_end) - min(x_start, y_start)).total_seconds() < 2 * float(SLEEP) + 6
    # With --gpus 0,1 the two stages running side by side got one GPU each.
    assert {bx["gpu"], by["gpu"]} == {"0", "1"}
    assert all(entry["gpu"] in ("0", "1") for entry in shared.after_first)
    # Two stages at a time share the cores: each stage's thread pool is half the machine.
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert {entry["threads"] for entry in shared.after_first} == {threads}


def test_stage_that_fails_once_passes_with_retries(shared, prefect: PrefectApi):
    _ok(shared.first_run)
    assert [entry["ok"] for entry in runs_of(shared.log, "flaky")] == [False, True]
    flaky = prefect.task_runs(shared.first_id)["flaky"]
    assert flaky["state_type"] == "COMPLETED" and flaky["run_count"] == 2


def test_final_restore_in_the_checkout_recomputes_nothing(shared):
    _ok(shared.first_run)
    # Every stage ran exactly once (flaky: once plus its retry), all in scratch workspaces:
    # the closing `dvc repro --pull` in the checkout restored them, it did not run them.
    ran = [entry["stage"] for entry in shared.after_first]
    assert sorted(ran) == sorted(["a", "b@x", "b@y", "c", "flaky", "flaky"])
    output = shared.first_run.stdout + shared.first_run.stderr
    assert "Stage 'c' is cached - skipping run" in output
    assert "recomputed" not in output
    for name in DIAMOND_OUTS:
        assert (shared.first / "out" / f"{name}.txt").is_file(), name
    status = dvc(shared.first, shared.env, "status")
    assert "Data and pipelines are up to date." in status.stdout


def test_second_checkout_restores_from_the_shared_remote(shared, prefect: PrefectApi):
    _ok(shared.first_run)
    _ok(shared.second_run)

    assert entries(shared.log) == shared.after_first  # no stage command ran again
    output = shared.second_run.stdout + shared.second_run.stderr
    for address in ("a", "b@x", "b@y", "c", "flaky"):
        assert f"Stage '{address}' is cached - skipping run" in output
    assert "Running stage" not in output
    for name in DIAMOND_OUTS:
        produced = (shared.first / "out" / f"{name}.txt").read_text()
        assert (shared.second / "out" / f"{name}.txt").read_text() == produced
    assert "Data and pipelines are up to date." in dvc(shared.second, shared.env, "status").stdout
    assert prefect.flow_run(shared.second_id)["state_type"] == "COMPLETED"
    assert len(pipeline_runs(shared.tracking_uri)) == 2  # one MLflow pipeline run per flow run


# a ─┬─ ok ──────┬─ joint
#    └─ bad ─┬───┘
#            └─ below
BROKEN = {
    "a": stage("a"),
    "ok": stage("ok", "a"),
    "bad": stage("bad", "a"),
    "below": stage("below", "bad"),
    "joint": stage("joint", "ok", "bad"),
}


def test_failed_stage_stops_only_its_descendants(
    tmp_path: Path, flow_env: dict[str, str], tracking_db: str, prefect: PrefectApi
):
    repo = make_toy_repo(tmp_path / "repo", BROKEN)
    log = tmp_path / "stage-runs.jsonl"
    env = env_for_toys(flow_env, log, fail="bad")

    done = run_flow(repo, env, "--remote", str(tmp_path / "remote"), "--retries", "0")

    assert done.returncode == 1, done.stdout[-4000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kdflow pipeline: error: 1 stage(s) failed: bad (")
    assert "RuntimeError: boom in bad" in last
    assert "2 not run because an upstream stage failed: below, joint" in last
    assert sorted(e["stage"] for e in entries(log)) == ["a", "bad", "ok"]  # below, joint: never

    run_id = flow_run_id(tracking_db)
    assert prefect.flow_run(run_id)["state_type"] == "FAILED"
    tasks = prefect.task_runs(run_id)
    assert {name: run["state_name"] for name, run in tasks.items()} == {
        "a": "Completed",
        "ok": "Completed",
        "bad": "Failed",
        "below": "NotReady",
        "joint": "NotReady",
    }
    logs = "\n".join(prefect.logs(run_id))
    assert "RuntimeError: boom in bad" in logs
    assert "not run: joint (upstream bad failed)" in logs
    # The branch that did not fail is restored in the checkout; nothing of the failed one is.
    assert (repo / "out" / "ok.txt").read_text() == "oka"
    assert not (repo / "out" / "bad.txt").exists() and not (repo / "out" / "below.txt").exists()
    (pipeline_run,) = pipeline_runs(tracking_db)
    assert pipeline_run.info.status == "FAILED"
    assert pipeline_run.data.metrics["stages_not_run"] == 2


def test_prefect_api_that_does_not_answer_fails_fast_in_one_line(tmp_path: Path):
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    env = prefect_env(tmp_path / "prefect-home", api)
    repo = make_toy_repo(tmp_path / "repo", {"a": stage("a")})

    started = time.monotonic()
    done = run_flow(repo, env, timeout=120)

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"kdflow pipeline: error: Prefect API {api} does not answer (ConnectError); start it "
        "with `make up`, or unset PREFECT_API_URL to run with a temporary local server"
    ]
    assert time.monotonic() - started < 60
    assert not (repo / "out").exists()


def test_flow_modules_import_neither_torch_nor_torch_importing_kdflow(tmp_path: Path):
    code = (
        "import sys, flows.pipeline, flows.services, flows.workspace, flows.dag\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] == 'torch' or (m.startswith("
        "('kdflow.train.', 'kdflow.models.', 'kdflow.losses.', 'kdflow.data.')) "
        "and m != 'kdflow.train.grid')]\n"
        "assert not heavy, heavy\n"
    )
    env = prefect_env(tmp_path / "prefect-home", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
