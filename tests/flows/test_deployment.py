"""The real pipeline as a scheduled user runs it: deployed from prefect.yaml, run by a worker.

One module-wide run: a scratch git copy of the repository with tiny params (500 MNIST-1D
samples, one epoch everywhere, one teacher/method/protocol/seed, one torch thread), deployed
as `on-demand` on the session's Prefect server, picked up by `prefect worker start --pool gpu
--type process`, tracked on a real `mlflow server` (SQLite backend and artifacts in tmp).

The run is triggered with `targets` (TARGETS and their upstream: four stages, two of them side
by side) to fit the suite's time budget: all 18 tiny stages take ~8 minutes through the flow
on a loaded 2-core machine (benchmarks/flow_vs_repro.py runs the whole pipeline).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from tests.flows.conftest import flow_env_for
from tests.flows.servers import VENV_BIN, PrefectApi, free_port, start, stop, wait_healthy
from tests.flows.toy import dvc
from tests.helpers import REPO, copy_repo, git, set_params

pytestmark = [
    pytest.mark.slow,
    # pygtrie deprecations inside DVC's own graph code, not ours.
    pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning"),
]

FLOW_RUN_TIMEOUT = 420  # seconds; ~2 minutes on a loaded 2-core machine
TARGETS = ["teacher_mcmi", "baseline"]  # prepare → teacher_mll → teacher_mcmi, baseline@full-0
TINY: dict[str, Any] = {
    "data": {"num_samples": 500},
    "runtime": {"device": "cpu", "threads": 1, "deterministic": False},
    "teacher": {"optim": {"batch_size": 64}},  # resnet8: the assembly stages need its widths
    "mcmi": {"optim": {"batch_size": 64}},
    "distill": {
        "student": "cnn3",
        "teachers": ["mll"],
        "methods": ["kd"],
        "protocols": ["full"],
        "seeds": [0],
        "optim": {"batch_size": 64},
    },
}


def _one_epoch(node: Any) -> None:
    """Set every `epochs` in params to 1, so stages added to the pipeline later stay tiny."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "epochs" and isinstance(value, int):
                node[key] = 1
            else:
                _one_epoch(value)


def _tiny_repo(root: Path) -> Path:
    repo = copy_repo(root)
    shutil.copytree(REPO / "flows", repo / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "prefect.yaml", repo / "prefect.yaml")
    set_params(repo, TINY)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    _one_epoch(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny pipeline")
    return repo


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    prefect: PrefectApi,
    prefect_api: str,
    prefect_home: Path,
    mlflow_template_db: Path,
) -> Any:
    """Deploy `on-demand`, trigger it, and wait for the worker to finish the flow run."""
    base = tmp_path_factory.mktemp("deployment")
    # The MLflow server starts while the repository is copied and deployed (~20 s).
    mlflow_url = f"http://127.0.0.1:{free_port()}"
    shutil.copyfile(mlflow_template_db, base / "mlflow.db")  # schema in place: faster start
    server_env = flow_env_for(prefect_home, prefect_api, base, "")
    server_env.pop("MLFLOW_TRACKING_URI")
    server_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job-runner processes
    mlflow_args = ["server", "--host", "127.0.0.1", "--port", mlflow_url.rsplit(":", 1)[1]]
    mlflow_args += ["--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}"]
    mlflow_args += ["--artifacts-destination", str(base / "mlartifacts"), "--workers", "1"]
    mlflow = start([str(VENV_BIN / "mlflow"), *mlflow_args], server_env, base / "mlflow.log")
    worker = None
    try:
        repo = _tiny_repo(base / "repo")
        env = flow_env_for(prefect_home, prefect_api, base, mlflow_url)
        env["KDFLOW_REPO"] = str(repo)  # the worker machine's checkout (prefect.yaml pull step)
        worker_args = ["worker", "start", "--pool", "gpu", "--type", "process"]
        worker = start([str(VENV_BIN / "prefect"), *worker_args], env, base / "worker.log", base)
        # The worker creates pool `gpu`; `prefect deploy` refuses a pool that does not exist.
        wait_healthy(f"{prefect_api}/work_pools/gpu", worker, base / "worker.log", 120)
        deployed = subprocess.run(
            [str(VENV_BIN / "prefect"), "--no-prompt", "deploy", "--name", "on-demand"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        wait_healthy(f"{mlflow_url}/health", mlflow, base / "mlflow.log", 240)
        spec = prefect.get("/deployments/name/kdflow-pipeline/on-demand")
        parameters = {"targets": TARGETS, "remote": str(base / "remote"), "retries": 0}
        created = prefect.post(
            f"/deployments/{spec['id']}/create_flow_run", {"parameters": parameters}
        )
        run = prefect.wait_flow_run(created["id"], FLOW_RUN_TIMEOUT)
        yield SimpleNamespace(
            repo=repo,
            env=env,
            spec=spec,
            run=run,
            mlflow_url=mlflow_url,
            worker_log=base / "worker.log",
        )
    finally:
        if worker is not None:
            stop(worker)
        stop(mlflow)


def _completed(deployment: Any) -> None:
    log = deployment.worker_log.read_text()[-8000:]
    assert deployment.run["state_type"] == "COMPLETED", f"{deployment.run['state']}\n{log}"


def test_deployment_is_the_prefect_yaml_one(deployment):
    spec = deployment.spec
    assert spec["entrypoint"] == "flows/pipeline.py:pipeline"
    assert spec["work_pool_name"] == "gpu"
    # KDFLOW_REPO is read on the worker when the run starts, not frozen at deploy time (the
    # deploying shell had it set).
    assert spec["pull_steps"] == [
        {
            "prefect.deployments.steps.run_shell_script": {
                "id": "checkout",
                "script": "echo $KDFLOW_REPO",
                "expand_env_vars": True,
            }
        },
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ checkout.stdout }}"}},
    ]


def test_worker_run_completes_with_every_stage_output_and_clean_status(deployment, prefect):
    from flows.dag import read_dag, select

    _completed(deployment)
    stages = list(select(read_dag(deployment.repo), TARGETS))
    assert stages == ["prepare", "teacher_mll", "teacher_mcmi", "baseline@full-0"]
    tasks = prefect.task_runs(deployment.run["id"])
    assert {name: run["state_type"] for name, run in tasks.items()} == dict.fromkeys(
        stages, "COMPLETED"
    )
    # The worker restored every stage's outputs and dvc.lock entry into its checkout.
    lock = yaml.safe_load((deployment.repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(stages)
    for name, entry in lock.items():
        for out in entry.get("outs", []):
            assert (deployment.repo / out["path"]).exists(), f"{name}: {out['path']}"
    status = dvc(deployment.repo, deployment.env, "status", *TARGETS)
    assert "Data and pipelines are up to date." in status.stdout


def test_stage_runs_nest_under_the_pipeline_run_on_an_mlflow_server(deployment):
    from mlflow.tracking import MlflowClient

    from kdflow.config import load_params, params_hash

    _completed(deployment)
    client = MlflowClient(tracking_uri=deployment.mlflow_url)
    experiment = client.get_experiment_by_name("kdflow")
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    flow_run_id = deployment.run["id"]
    (pipeline,) = [r for r in runs if r.data.tags.get("kdflow.stage") == "pipeline"]
    stage_runs = [r for r in runs if r is not pipeline]
    head = git(deployment.repo, "rev-parse", "HEAD")

    assert pipeline.info.status == "FINISHED"
    assert pipeline.data.tags["kdflow.prefect_flow_run_id"] == flow_run_id
    assert pipeline.data.tags["kdflow.git_commit"] == head
    assert pipeline.data.params["max_parallel"] == "2"
    assert pipeline.data.metrics["stages_failed"] == 0
    assert stage_runs, "no stage logged a run"
    for run in stage_runs:
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == pipeline.info.run_id, tags["kdflow.stage"]
        assert tags["kdflow.prefect_flow_run_id"] == flow_run_id
        assert tags["kdflow.git_commit"] == head
        assert run.info.status == "FINISHED"
    by_stage = {run.data.tags["kdflow.stage"]: run for run in stage_runs}
    assert set(by_stage) == {"prepare", "teacher_mll", "teacher_mcmi", "distill@none-none-full-s0"}

    prepare = by_stage["prepare"]
    assert prepare.data.params["data.num_samples"] == "500"
    assert prepare.data.metrics["rows_train"] + prepare.data.metrics["rows_val"] == 400
    tags = prepare.data.tags
    expected_hash = params_hash(load_params(deployment.repo / "params.yaml"))
    assert tags["kdflow.params_hash"] == expected_hash
    assert {"kdflow.versions", "kdflow.device", "kdflow.git_dirty"} <= set(tags)
    assert tags["kdflow.validation"] == "passed"
    # Artifacts went through the server (a worker on another machine has no shared disk).
    listed = [a.path for a in client.list_artifacts(prepare.info.run_id, "validation")]
    assert listed == ["validation/validation.json"]
    teacher = by_stage["teacher_mll"].data
    assert teacher.tags["kdflow.input.data"]  # the prepared data's fingerprint
    assert teacher.tags["kdflow.device"] == "cpu"
    assert teacher.params["teacher.optim.epochs"] == "1" and "test_acc" in teacher.metrics
