"""The one place that talks to MLflow: store location, reachability, runs and lineage tags."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from kdflow.config import Params, TrackingParams, params_hash
from kdflow.errors import KdflowError

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "KDFLOW_PARENT_RUN_ID"  # set by the Prefect flow so stage runs nest under it
FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"  # set by Prefect in the processes its workers start
LINEAGE_TAGS = ("kdflow.stage", "kdflow.git_commit", "kdflow.git_dirty", "kdflow.params_hash")


def default_uri(root: Path) -> str:
    """Return the default SQLite store inside the repository."""
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def resolve_uri(params: TrackingParams, root: Path) -> str:
    """Return the tracking URI: MLFLOW_TRACKING_URI, else tracking.uri, else the SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or params.uri or default_uri(root)


def server_answers(uri: str, timeout: float = 5.0) -> bool:
    """Return whether an http(s) tracking server answers its health endpoint."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def choose_uri(params: TrackingParams, root: Path) -> str:
    """Return a usable tracking URI; an unreachable server is an error unless not required."""
    uri = resolve_uri(params, root)
    if not uri.startswith(("http://", "https://")) or server_answers(uri):
        return uri
    if params.required:
        raise KdflowError(
            f"MLflow tracking server {uri} does not answer; start it (make up) or set "
            "tracking.required: false to log to the local SQLite store"
        )
    fallback = default_uri(root)
    log.warning("MLflow server %s does not answer; logging to %s instead", uri, fallback)
    return fallback


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def package_versions() -> dict[str, str]:
    """Return the versions of python and the packages results depend on."""
    versions = {"python": platform.python_version()}
    for name in ("kdflow", "torch", "numpy", "polars", "mlflow", "dvc", "great-expectations"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def lineage_tags(
    stage: str, params: Params, inputs: dict[str, str], root: Path, device: str = "cpu"
) -> dict[str, str]:
    """Return the lineage tags every stage run carries."""
    commit = _git(root, "rev-parse", "HEAD")
    tags = {
        "kdflow.stage": stage,
        "kdflow.git_commit": commit or "unknown",
        "kdflow.git_dirty": str(bool(_git(root, "status", "--porcelain", "--untracked-files=no"))),
        "kdflow.params_hash": params_hash(params),
        "kdflow.versions": json.dumps(package_versions(), sort_keys=True),
        "kdflow.device": device,
        "kdflow.command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get(FLOW_RUN_ENV):
        tags["kdflow.prefect_flow_run_id"] = os.environ[FLOW_RUN_ENV]
    tags.update({f"kdflow.input.{name}": digest for name, digest in inputs.items()})
    return tags


class StageRun:
    """A live MLflow run; logging failures are collected instead of killing the stage."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.failures: list[str] = []

    @property
    def offline(self) -> bool:
        """Return whether a logging call failed, after which nothing more is sent."""
        return bool(self.failures)

    def _safely(self, what: str, call: Any, *args: Any, **kwargs: Any) -> None:
        if self.offline:
            # The failed call already spent MLflow's retries: a server that is gone would
            # cost every later call the same wait (seconds each) for nothing.
            self.failures.append(f"{what}: not sent")
            return
        try:
            call(self.run_id, *args, **kwargs)
        except Exception as exc:  # the stage's own outputs must survive a dying server
            log.warning(
                "MLflow logging failed (%s); the stage goes on and logs nothing more to MLflow",
                type(exc).__name__,
            )
            self.failures.append(f"{what}: {type(exc).__name__}")

    def log_params(self, values: dict[str, Any]) -> None:
        """Log flat params (values stringified)."""
        from mlflow.entities import Param

        entries = [Param(k, str(v)[:6000]) for k, v in values.items()]
        self._safely("params", self.client.log_batch, params=entries)

    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        """Log numeric metrics at an optional step."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, step or 0) for k, v in values.items()]
        self._safely("metrics", self.client.log_batch, metrics=entries)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set string tags."""
        from mlflow.entities import RunTag

        self._safely("tags", self.client.log_batch, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file as an artifact."""
        self._safely("artifact", self.client.log_artifact, str(path), artifact_path)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return a nested dict flattened to dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def ensure_experiment(client: Any, name: str, uri: str, root: Path) -> str:
    """Return the id of experiment `name`, creating it (artifacts beside a SQLite store)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None  # a server chooses its own artifact store
    if uri.startswith("sqlite:"):
        location = (root / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, location)


@contextlib.contextmanager
def stage_run(
    stage: str,
    params: Params,
    inputs: dict[str, str] | None = None,
    root: str | Path = ".",
    device: str = "cpu",
) -> Iterator[StageRun]:
    """Yield an MLflow run for one stage, tagged with lineage, nested under a flow's run if any."""
    root = Path(root)
    uri = choose_uri(params.tracking, root)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    # mlflow logs its SQLite schema setup at INFO; a stage's stderr stays for kdflow's own lines.
    logging.getLogger("mlflow.store").setLevel(logging.WARNING)
    # urllib3 warns once per retry of a dead server; StageRun reports the failure itself.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

    client = MlflowClient(tracking_uri=uri)
    try:
        experiment_id = ensure_experiment(client, params.tracking.experiment, uri, root)
        tags = lineage_tags(stage, params, inputs or {}, root, device)
        parent = os.environ.get(PARENT_RUN_ENV)
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = client.create_run(experiment_id, tags=tags, run_name=stage)
    except KdflowError:
        raise
    except Exception as exc:
        raise KdflowError(
            f"MLflow at {uri} refused to start a run ({type(exc).__name__}: {exc}); "
            "check the tracking URI or set MLFLOW_TRACKING_URI"
        ) from None
    handle = StageRun(client, run.info.run_id)
    status = "FAILED"
    try:
        yield handle
        status = "FINISHED"
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (stages/_cli.py): stopped, not broken
        status = "KILLED"
        raise
    finally:
        if not handle.offline:
            with contextlib.suppress(Exception):
                client.set_terminated(handle.run_id, status)
        if handle.failures:
            counts = Counter(what.split(":")[0] for what in handle.failures)
            log.warning(
                "MLflow run %s at %s is missing %d logged item(s) (%s) and was not closed there "
                "(it shows RUNNING)%s",
                handle.run_id,
                uri,
                len(handle.failures),
                ", ".join(f"{what} ×{n}" for what, n in sorted(counts.items())),
                "; the stage's outputs are written" if status == "FINISHED" else "",
            )


def find_stage_run(client: Any, stage: str, run_id: str | None = None) -> Any | None:
    """Return MLflow run `run_id` if the store has it, else the newest finished run of `stage`.

    Stage outputs hold no run ids (they differ between identical runs): a run is found by its
    `kdflow.stage` tag, or by the id in the stage's untracked run record. Deleted runs count,
    so that a caller can say the run was deleted.
    """
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    if run_id:
        with contextlib.suppress(MlflowException):
            return client.get_run(run_id)
    if "'" in stage or "\\" in stage:  # not a stage name; it would break the filter
        return None
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`kdflow.stage` = '{stage}' and attributes.status = 'FINISHED'",
        run_view_type=ViewType.ALL,
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None
