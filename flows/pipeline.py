"""The DVC pipeline as a Prefect flow: one task per stage, each in its own scratch workspace.

    python -m flows.pipeline [TARGET ...] [--remote URL] [--max-parallel 2] [--retries 1]

The flow reads the stage DAG from DVC (flows/dag.py), so a stage added to dvc.yaml needs no
edit here. A stage starts once its upstream stages have finished, at most `max_parallel` at a
time; each runs `dvc fetch --run-cache` → `dvc repro --pull STAGE` → `dvc push --run-cache`
in a scratch clone that shares the DVC remote (flows/workspace.py), so upstream outputs are
restored from the run-cache, never recomputed. A failed stage (after its retries) stops its
descendants only; they end as Prefect's `NotReady` ("upstream did not complete") and the flow
run as Failed. The flow ends with the same fetch + `dvc repro --pull` in the checkout it was
started from, which restores every finished stage's outputs and dvc.lock without running them.

MLflow: the flow opens one pipeline run in the flow process and hands its id to every stage
process (KDFLOW_PARENT_RUN_ID), with the Prefect flow-run id, so each stage's run nests under
it. Tasks run in threads and MLflow's active run is per thread: no task opens an MLflow run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import ValidationError

from flows.dag import Dag, ancestors, read_dag, select
from flows.workspace import (
    Remote,
    Snapshot,
    dvc_args,
    dvc_root,
    error_line,
    make_workspace,
    ran_stages,
    resolve_remote,
    restored_stages,
    run_command,
    stop_all,
    take_snapshot,
)
from kdflow.config import TrackingParams
from kdflow.errors import KdflowError
from kdflow.tracking import (
    FLOW_RUN_ENV,
    PARENT_RUN_ENV,
    choose_uri,
    ensure_experiment,
    package_versions,
)

FLOW_NAME = "kdflow-pipeline"
COMPLETED, FAILED, NOT_RUN = "completed", "failed", "not run"
# Threads only carry stages and instant `NotReady` verdicts; `max_parallel` bounds the stages.
THREADS = 64


class StageFailed(Exception):
    """A DVC stage's command failed in its scratch workspace."""


@dataclass(frozen=True)
class StageJob:
    """What a stage task needs: the snapshot to clone, the shared remote, the stage env."""

    snapshot: Snapshot
    remote: Remote
    workdir: Path  # where scratch workspaces are created
    env: dict[str, str] = field(repr=False)
    keep_workspaces: bool = False


@dataclass
class PipelineRun:
    """The MLflow run that every stage run of one flow run nests under."""

    client: Any
    run_id: str
    uri: str


def _slug(address: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", address)[:60]


@task(name="dvc-stage", cache_policy=NO_CACHE, persist_result=False)
def run_stage(address: str, job: StageJob, gpu: str | None = None) -> dict[str, list[str]]:
    """Run one DVC stage in a scratch workspace and push its outputs and run-cache entry."""
    logger = get_run_logger()
    scratch = Path(tempfile.mkdtemp(prefix=f"{_slug(address)}-", dir=job.workdir))
    try:
        workspace = make_workspace(job.snapshot, scratch / "repo", job.remote)
        # DVC keeps a per-checkout index under its site cache; keep the scratch ones together.
        env = {**job.env, "DVC_SITE_CACHE_DIR": str(job.workdir / "dvc-site-cache")}
        if gpu is not None:  # the stage sees one GPU, as `cuda`; its siblings see others
            env["CUDA_VISIBLE_DEVICES"] = gpu
            logger.info("on GPU %s", gpu)
        # `repro --pull` alone does not fetch run-cache entries (DESIGN.md); `--with-deps`
        # limits the data fetched to what this stage's upstream already recorded in dvc.lock.
        steps = (
            ("fetch", "--run-cache", "--with-deps", address),
            ("repro", "--pull", address),
            ("push", "--run-cache", address),
        )
        repro_lines: tuple[str, ...] = ()
        for args in steps:
            logger.info("$ dvc %s", " ".join(args))
            result = run_command(dvc_args(*args), workspace, env, on_line=logger.info)
            if result.returncode != 0:
                raise StageFailed(
                    f"stage {address}: dvc {args[0]} exited {result.returncode}: "
                    f"{error_line(result.lines)}"
                )
            if args[0] == "repro":
                repro_lines = result.lines
        ran, restored = ran_stages(repro_lines), restored_stages(repro_lines)
        recomputed = [stage for stage in ran if stage != address]
        if recomputed:
            logger.warning(
                "recomputed upstream %s: no run-cache entry in the remote", ", ".join(recomputed)
            )
        return {"ran": ran, "restored": restored}
    finally:
        if job.keep_workspaces:
            logger.info("workspace kept at %s", scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _tracking_params(root: Path) -> TrackingParams:
    """Return the `tracking` section of params.yaml, or its defaults for other pipelines."""
    path = root / "params.yaml"
    raw = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    try:
        return TrackingParams.model_validate(raw.get("tracking") or {})
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise KdflowError(f"params: tracking.{where} is invalid: {problem['msg']}") from None


def open_pipeline_run(
    root: Path, flow_run_id: str, snapshot: Snapshot, remote: Remote, settings: dict[str, Any]
) -> PipelineRun:
    """Create the pipeline's MLflow run (in the calling thread's client, not as active run)."""
    tracking = _tracking_params(root)
    uri = choose_uri(tracking, root)  # one line, not a hang, when a server is down
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store").setLevel(logging.WARNING)
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    tags = {
        "kdflow.stage": "pipeline",
        "kdflow.git_commit": snapshot.commit,
        "mlflow.source.git.commit": snapshot.commit,
        "kdflow.git_dirty": str(snapshot.dirty),
        "kdflow.prefect_flow_run_id": flow_run_id,
        "kdflow.dvc_remote": remote.url,
        "kdflow.versions": json.dumps(package_versions(), sort_keys=True),
    }
    try:
        experiment_id = ensure_experiment(client, tracking.experiment, uri, root)
        run = client.create_run(experiment_id, tags=tags, run_name="pipeline")
        params = [Param(key, str(value)) for key, value in settings.items()]
        client.log_batch(run.info.run_id, params=params)
    except Exception as exc:
        raise KdflowError(
            f"MLflow at {uri} refused the pipeline run ({type(exc).__name__}: {exc}); "
            "check the tracking URI or set MLFLOW_TRACKING_URI"
        ) from None
    return PipelineRun(client, run.info.run_id, uri)


def stage_threads(max_parallel: int) -> str:
    """Return each stage process's OMP_NUM_THREADS: the user's, else the cores split among
    the stages that run at once."""
    return os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // max_parallel))


def _stage_env(run: PipelineRun, flow_run_id: str, max_parallel: int) -> dict[str, str]:
    env = dict(os.environ)
    # torch sizes its thread pool from OMP_NUM_THREADS (runtime.threads, when set, wins).
    # Stages side by side, each with a pool as large as the machine, spin against each other:
    # measured on 2 cores, two default CPU stages at once each ran 10-20x slower than alone.
    env["OMP_NUM_THREADS"] = stage_threads(max_parallel)
    # Stage commands in dvc.yaml say `python`: make it this environment's interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env[PARENT_RUN_ENV] = run.run_id
    env[FLOW_RUN_ENV] = flow_run_id
    # A scratch workspace's default store would be its own mlflow.db, deleted with it.
    env["MLFLOW_TRACKING_URI"] = run.uri
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _dvc_in_root(root: Path, env: dict[str, str], *args: str) -> tuple[int, tuple[str, ...]]:
    logger = get_run_logger()
    logger.info("$ dvc %s  (in %s)", " ".join(args), root)
    result = run_command(dvc_args(*args), root, env, on_line=logger.info)
    return result.returncode, result.lines


def _restore(root: Path, env: dict[str, str], targets: list[str]) -> str | None:
    """Restore stage outputs and dvc.lock in `root` from the run-cache; return an error line."""
    _dvc_in_root(root, env, "fetch", "--run-cache", *targets)
    code, lines = _dvc_in_root(root, env, "repro", "--pull", *targets)
    if code != 0:
        return f"restoring outputs with dvc repro --pull in {root} failed: {error_line(lines)}"
    recomputed = ran_stages(lines)
    if recomputed:  # they had no run-cache entry: ran here instead, once more
        get_run_logger().warning("recomputed in %s: %s", root, ", ".join(recomputed))
    return None


def _schedule(
    dag: Dag,
    job: StageJob,
    max_parallel: int,
    retries: int,
    delay: float,
    gpus: list[str] | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Run the stages of `dag`; return each stage's status and each failure's error line."""
    logger = get_run_logger()
    status: dict[str, str] = {}
    errors: dict[str, str] = {}
    futures: dict[str, PrefectFuture] = {}
    running: dict[Any, str] = {}  # PrefectConcurrentFuture -> stage address
    free_gpus = list(gpus or [])
    gpu_of: dict[Any, str | None] = {}
    if gpus:
        max_parallel = min(max_parallel, len(gpus))  # one stage per GPU at a time
    waiting = list(dag)  # topological: a stage never precedes its upstream

    def stage_task(address: str) -> Any:
        return run_stage.with_options(
            task_run_name=address, retries=retries, retry_delay_seconds=delay
        )

    while waiting or running:
        for address in list(waiting):
            upstream = dag[address]
            blocked = [up for up in upstream if status.get(up) in (FAILED, NOT_RUN)]
            if blocked:
                # Prefect's own verdict for a task whose upstream failed: `NotReady`.
                waiting.remove(address)
                status[address] = NOT_RUN
                causes = [up for up in ancestors(dag, address) if status.get(up) == FAILED]
                logger.warning("not run: %s (upstream %s failed)", address, ", ".join(causes))
                upstream_futures = [futures[up] for up in blocked]
                futures[address] = stage_task(address).submit(
                    address, job, wait_for=upstream_futures
                )
            elif len(running) < max_parallel and all(status.get(u) == COMPLETED for u in upstream):
                waiting.remove(address)
                # wait_for on finished futures only draws the DAG's edges in the Prefect UI.
                upstream_futures = [futures[up] for up in upstream]
                gpu = free_gpus.pop(0) if free_gpus else None
                future = stage_task(address).submit(address, job, gpu, wait_for=upstream_futures)
                futures[address] = future
                running[future] = address
                gpu_of[future] = gpu
        if not running:
            break
        # A timed wait: the main thread wakes every second, so Ctrl-C and a worker's SIGTERM
        # are handled (an untimed lock wait sleeps through signals caught by other threads).
        by_wrapped = {future.wrapped_future: future for future in running}
        done, _ = concurrent.futures.wait(
            list(by_wrapped), timeout=1.0, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for wrapped in done:
            finished = by_wrapped[wrapped]
            address = running.pop(finished)
            if gpu_of[finished] is not None:
                free_gpus.append(gpu_of[finished])
            finished.wait()  # sets the future's final state from the finished thread
            state = finished.state
            if state.is_completed():
                status[address] = COMPLETED
            else:
                status[address] = FAILED
                errors[address] = _failure_line(state)
                logger.error("stage %s failed: %s", address, errors[address])
    for future in futures.values():
        future.wait()  # the `NotReady` verdicts reach the API before the flow run ends
    return status, errors


def _failure_line(state: State) -> str:
    try:
        state.result(raise_on_failure=True)
    except StageFailed as exc:
        return str(exc)
    except Exception as exc:  # anything else a task can die of, in one line
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name or "failed"


def _summary(status: dict[str, str], errors: dict[str, str]) -> str:
    failed = [f"{stage} ({errors[stage]})" for stage in status if status[stage] == FAILED]
    not_run = [stage for stage in status if status[stage] == NOT_RUN]
    parts = [f"{len(failed)} stage(s) failed: " + "; ".join(failed)]
    if not_run:
        shown = ", ".join(not_run[:10]) + (", …" if len(not_run) > 10 else "")
        parts.append(f"{len(not_run)} not run because an upstream stage failed: {shown}")
    return ". ".join(parts)


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=THREADS))
def pipeline(
    targets: list[str] | None = None,
    remote: str | None = None,
    max_parallel: int = 2,
    retries: int = 1,
    retry_delay_s: float = 10.0,
    root: str | None = None,
    keep_workspaces: bool = False,
    gpus: list[str] | None = None,
) -> State:
    """Run the DVC pipeline (or `targets` and their upstream) as Prefect tasks.

    `gpus` (e.g. ["0", "1"]) gives each running stage one of them as CUDA_VISIBLE_DEVICES,
    so a multi-GPU worker runs one stage per GPU; without it stages see every GPU.
    """
    from prefect.runtime import flow_run

    logger = get_run_logger()
    started = time.monotonic()
    flow_run_id = str(flow_run.get_id() or "")
    workdir: Path | None = None
    run: PipelineRun | None = None
    try:
        if max_parallel < 1 or retries < 0:
            raise KdflowError("max_parallel must be at least 1 and retries at least 0")
        repo = dvc_root(Path(root) if root else Path.cwd())
        dag = select(read_dag(repo), targets)
        workdir = Path(tempfile.mkdtemp(prefix=f"kdflow-flow-{flow_run_id[:8]}-"))
        snapshot = take_snapshot(repo, workdir)
        shared = resolve_remote(repo, remote)
        settings = {
            "targets": ",".join(targets or []) or "all",
            "max_parallel": max_parallel,
            "retries": retries,
            "dvc_remote": shared.url,
            "gpus": ",".join(gpus or []) or "all visible",
            "threads_per_stage": stage_threads(max_parallel),
            "stages": len(dag),
        }
        run = open_pipeline_run(repo, flow_run_id, snapshot, shared, settings)
    except KdflowError as exc:
        logger.error("%s", exc)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        return Failed(message=str(exc))

    dirty = " + uncommitted edits" if snapshot.dirty else ""
    logger.info(
        "%d stage(s) from %s at %s%s; DVC remote %s; MLflow run %s",
        len(dag),
        repo,
        snapshot.commit[:12],
        dirty,
        shared.url,
        run.run_id,
    )
    env = _stage_env(run, flow_run_id, max_parallel)
    job = StageJob(snapshot, shared, workdir, env, keep_workspaces)
    outcome = "FAILED"
    try:
        # Share what this checkout already computed, so no workspace recomputes it.
        code, lines = _dvc_in_root(repo, env, "push", "--run-cache")
        if code != 0:
            logger.warning("sharing this checkout's cache failed (%s); going on", error_line(lines))
        try:
            status, errors = _schedule(dag, job, max_parallel, retries, retry_delay_s, gpus)
        except BaseException:
            # Cancelled or interrupted: no stage may go on training behind the flow's back.
            stop_all()
            raise
        done = [stage for stage in dag if status[stage] == COMPLETED]
        problem = None
        if done:  # all of the pipeline: no targets; else only what finished (with its upstream)
            problem = _restore(repo, env, [] if len(done) == len(dag) and not targets else done)
        counts = {key: list(status.values()).count(key) for key in (COMPLETED, FAILED, NOT_RUN)}
        _log_metrics(run, {f"stages_{k.replace(' ', '_')}": n for k, n in counts.items()}, started)
        if problem:
            return Failed(message=problem)
        if errors:
            return Failed(message=_summary(status, errors))
        outcome = "FINISHED"
        logger.info("%d stage(s) completed; outputs restored in %s", len(done), repo)
        return Completed(message=f"{len(done)} stage(s) completed", data=status)
    finally:
        try:
            run.client.set_terminated(run.run_id, outcome)
        except Exception as exc:  # the pipeline's outcome stands even if MLflow went away
            logger.warning("could not close MLflow run %s: %s", run.run_id, exc)
        if not keep_workspaces:
            shutil.rmtree(workdir, ignore_errors=True)


def _log_metrics(run: PipelineRun, values: dict[str, float], started: float) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = {**values, "wall_seconds": time.monotonic() - started}
    metrics = [Metric(key, float(value), now, 0) for key, value in values.items()]
    try:
        run.client.log_batch(run.run_id, metrics=metrics)
    except Exception as exc:
        get_run_logger().warning("could not log pipeline metrics to MLflow: %s", exc)


def check_prefect_api(timeout: float = 5.0) -> None:
    """Raise a one-line error when PREFECT_API_URL is set and nothing answers there."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return  # Prefect starts a temporary local server for this one run
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise KdflowError(
            f"Prefect API {url} does not answer ({type(exc).__name__}); start it with "
            "`make up`, or unset PREFECT_API_URL to run with a temporary local server"
        ) from None


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline flow from the command line; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.pipeline",
        description="Run the DVC pipeline as a Prefect flow: stages in parallel scratch "
        "workspaces sharing a DVC remote, restored into this checkout at the end.",
    )
    parser.add_argument(
        "targets", nargs="*", help="stages or foreach/matrix groups (default: all stages)"
    )
    parser.add_argument("--root", help="DVC project root (default: the one holding the cwd)")
    parser.add_argument(
        "--remote",
        help="DVC remote shared by the workspaces: a remote name, a URL, or a path relative "
        "to the repository root (default: $KDFLOW_DVC_REMOTE, the repository's default "
        "remote, else ../kdflow-remote)",
    )
    parser.add_argument("--max-parallel", type=int, default=2, help="stages at once (2)")
    parser.add_argument("--retries", type=int, default=1, help="retries of a failed stage (1)")
    parser.add_argument("--retry-delay", type=float, default=10.0, help="seconds (10)")
    parser.add_argument(
        "--gpus",
        type=lambda value: [gpu.strip() for gpu in value.split(",") if gpu.strip()],
        help="GPU ids, e.g. 0,1,2,3: one stage per GPU at a time (CUDA_VISIBLE_DEVICES)",
    )
    parser.add_argument(
        "--keep-workspaces", action="store_true", help="keep scratch workspaces for inspection"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    args = parser.parse_args(argv)
    try:
        check_prefect_api()
        # Checked here too so a typo fails in a second, before Prefect starts a flow run.
        select(read_dag(dvc_root(Path(args.root or "."))), args.targets)
        state = pipeline(
            targets=args.targets or None,
            remote=args.remote,
            max_parallel=args.max_parallel,
            retries=args.retries,
            retry_delay_s=args.retry_delay,
            root=str(Path(args.root).resolve()) if args.root else None,
            keep_workspaces=args.keep_workspaces,
            gpus=args.gpus,
            return_state=True,
        )
    except KdflowError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"kdflow pipeline: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "kdflow pipeline: interrupted; running stages were stopped, finished ones are in "
            "the remote's run-cache: rerun to resume",
            file=sys.stderr,
        )
        return 130
    if state.is_completed():
        return 0
    print(f"kdflow pipeline: error: {state.message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
