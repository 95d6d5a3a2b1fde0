"""The audit's checks; each returns a CheckResult and never raises for a failed check."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kdflow.tracking import LINEAGE_TAGS, package_versions


@dataclass
class CheckResult:
    """One audit verdict: a name, pass/fail and the reason."""

    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-able dict."""
        return asdict(self)


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    dvc = Path(sys.executable).with_name("dvc")
    command = [str(dvc) if dvc.exists() else "dvc", *args]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)


def _changed_params(
    root: Path, lock: dict[str, Any], stage: str, path: str, params: dict[str, str]
) -> list[str]:
    """Return the dotted names of the changed params: DVC names only the tracked section."""
    import yaml

    from kdflow.tracking import flatten

    locked = lock.get("stages", {}).get(stage, {}).get("params", {}).get(path, {})
    try:
        current = yaml.safe_load((root / path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        current = {}
    names = []
    for key, status in sorted(params.items()):
        new: Any = current
        for part in key.split("."):
            new = new.get(part) if isinstance(new, dict) else None
        old = locked.get(key)
        if status == "modified" and isinstance(old, dict) and isinstance(new, dict):
            before, after = flatten(old, f"{key}."), flatten(new, f"{key}.")
            names += [
                k for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)
            ]
        else:
            names.append(f"{key} {status}")
    return names


def _describe_changes(root: Path, lock: dict[str, Any], stage: str, changes: list[Any]) -> str:
    kinds = set()
    for change in changes:
        if not isinstance(change, dict):
            kinds.add(str(change))
            continue
        for key, value in change.items():
            if not isinstance(value, dict):
                kinds.add(f"{key}: {value}")
                continue
            paths = [
                f"{path} ({', '.join(_changed_params(root, lock, stage, path, status))})"
                if isinstance(status, dict)
                else path
                for path, status in sorted(value.items())
            ]
            kinds.add(f"{key}: {', '.join(paths)}")
    return "; ".join(sorted(kinds))


def check_dvc_status(root: Path) -> CheckResult:
    """Return whether dvc.lock matches the workspace (dvc status is clean)."""
    out = _dvc(root, "status", "--json")
    if out.returncode != 0:
        return CheckResult("dvc.lock matches workspace", False, out.stderr.strip()[:300])
    status = json.loads(out.stdout or "{}")
    if not status:
        return CheckResult("dvc.lock matches workspace", True, "dvc status: clean")

    def tampered_first(item: tuple[str, list[Any]]) -> tuple[bool, str]:
        # A stage whose own outputs changed is where the workspace was touched; its
        # downstream stages only report changed deps, so they come after it.
        stage, changes = item
        return (not any(isinstance(c, dict) and "changed outs" in c for c in changes), stage)

    lock = _load_lock(root)
    parts = [
        f"{stage} ({_describe_changes(root, lock, stage, changes)})"
        for stage, changes in sorted(status.items(), key=tampered_first)
    ]
    return CheckResult(
        "dvc.lock matches workspace",
        False,
        f"{len(status)} stage(s) changed: " + ", ".join(parts[:5]),
    )


def reported_runs(root: Path) -> dict[str, dict[str, Any]]:
    """Return {model name: its stage metrics} for every model in metrics/eval.json."""
    evaluation = json.loads((root / "metrics/eval.json").read_text())
    runs = {}
    for name in evaluation["models"]:
        kind, stem = name.split("/")
        runs[name] = json.loads((root / "metrics" / kind / f"{stem}.json").read_text())
    return runs


def check_lineage(root: Path, tracking_uri: str) -> CheckResult:
    """Return whether every reported model traces to an MLflow run with complete lineage.

    A model's run is the one its stage's run record names (`.kdflow/runs/`), else the newest
    finished run tagged with the stage its metrics file names.
    """
    from mlflow.tracking import MlflowClient

    from kdflow.io import read_run_record
    from kdflow.tracking import find_stage_run

    name = "every reported figure has an MLflow run with lineage"
    try:
        runs = reported_runs(root)
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        return CheckResult(name, False, f"cannot read the evaluated models ({exc})")
    client = MlflowClient(tracking_uri=tracking_uri)
    problems = []
    for model, metrics in runs.items():
        stage = metrics.get("stage")
        if not isinstance(stage, str) or not stage:
            problems.append(f"{model}: its metrics file names no stage; rerun its stage")
            continue
        record = read_run_record(stage, root) or {}
        run = find_stage_run(client, stage, record.get("mlflow_run_id"))
        if run is None:
            problems.append(f"{model}: no finished MLflow run of stage {stage}")
            continue
        run_id = run.info.run_id
        if run.info.lifecycle_stage != "active":
            problems.append(f"{model}: MLflow run {run_id} is deleted")
            continue
        missing = [t for t in LINEAGE_TAGS if not run.data.tags.get(t)]
        if missing:
            problems.append(f"{model}: run {run_id} lacks tags {missing}")
        if run.data.tags.get("kdflow.validation") != "passed":
            problems.append(f"{model}: run {run_id} has no passed validation tag")
        logged = run.data.metrics.get("test_acc")
        if logged is not None and abs(logged - metrics["test_acc"]) > 1e-9:
            problems.append(
                f"{model}: metrics file test_acc {metrics['test_acc']} ≠ MLflow run's {logged}"
            )
    if problems:
        return CheckResult(name, False, f"{len(problems)} problem(s): " + "; ".join(problems[:4]))
    return CheckResult(name, True, f"{len(runs)} models traced to MLflow runs")


def _load_lock(root: Path) -> dict[str, Any]:
    import yaml

    path = root / "dvc.lock"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _dir_listing(path: Path) -> list[dict[str, str]]:
    """Return a folder's DVC listing: [{"md5", "relpath"}] of every file, sorted by path."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return [{"md5": _md5_file(p), "relpath": p.relative_to(path).as_posix()} for p in files]


def dvc_md5(path: Path) -> str | None:
    """Return the md5 DVC records for an output (a folder's ends in .dir); None if absent.

    A folder's is the md5 of its file listing serialised as DVC does (dvc_data's
    Tree.as_bytes: key-sorted JSON of [{"md5", "relpath"}] sorted by relpath).
    """
    if path.is_file():
        return _md5_file(path)
    if not path.is_dir():
        return None
    listing = json.dumps(_dir_listing(path), sort_keys=True).encode()
    return hashlib.md5(listing).hexdigest() + ".dir"


def _locked_bytes(root: Path, rel: str, md5: str) -> bytes | None:
    """Return the bytes dvc.lock recorded for a file: the workspace's copy, else the cache's."""
    workspace = root / rel
    if workspace.is_file() and _md5_file(workspace) == md5:
        return workspace.read_bytes()
    cached = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    return cached.read_bytes() if cached.is_file() else None


def _file_differences(
    root: Path, rel: str, locked: str, fresh: Path, tolerance: float
) -> list[str]:
    """Return how a rerun's file differs from its locked bytes ([]: within the tolerance)."""
    if rel.endswith(".json"):
        before = _locked_bytes(root, rel, locked)
        try:
            old, new = json.loads(before or b""), json.loads(fresh.read_text())
        except ValueError:
            pass
        else:
            fields = _differences(old, new, tolerance)
            if fields:
                return [f"{rel}: {d}" for d in fields]
            return [] if tolerance > 0 else [f"{rel}: the same values in other bytes"]
    return [] if tolerance > 0 else [f"{rel} differs (md5 {locked} vs {_md5_file(fresh)})"]


def _folder_differences(
    root: Path, rel: str, locked: str, fresh: Path, tolerance: float
) -> list[str]:
    """Return how a rerun's folder differs from the folder dvc.lock recorded, file by file."""
    raw = _locked_bytes(root, rel, locked)
    workspace = root / rel
    try:
        listing = json.loads(raw) if raw is not None else None
    except ValueError:
        listing = None
    if listing is None and workspace.is_dir() and dvc_md5(workspace) == locked:
        listing = _dir_listing(workspace)
    if listing is None:
        return [f"{rel}/ differs (md5 {locked} vs {dvc_md5(fresh)})"]
    before = {f["relpath"]: f["md5"] for f in listing}
    after = {f["relpath"]: f["md5"] for f in _dir_listing(fresh)}
    found = []
    for name in sorted(before.keys() | after.keys()):
        if before.get(name) == after.get(name):
            continue
        if name not in before or name not in after:
            found.append(f"{rel}/{name} present in one run only")
        else:
            found += _file_differences(root, f"{rel}/{name}", before[name], fresh / name, tolerance)
    if not found and tolerance == 0:  # the same files, yet another md5: never hide it
        found.append(f"{rel}/ differs (md5 {locked} vs {dvc_md5(fresh)})")
    return found


def _differences(a: Any, b: Any, tolerance: float, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append(f"{where}{key} present in one run only")
            else:
                out += _differences(a[key], b[key], tolerance, f"{where}{key}.")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, tolerance, f"{where}{i}.")
        ]
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        if abs(a - b) > tolerance:
            return [f"{where.rstrip('.')}: {a} vs {b}"]
        return []
    return [] if a == b else [f"{where.rstrip('.')}: {a!r} vs {b!r}"]


def stage_command(cmd: Any) -> list[str] | None:
    """Return a dvc.lock command as argv if it runs a kdflow stage, else None.

    DVC runs commands through a shell; the audit runs only `python -m stages.NAME …`, without
    one, so an edited dvc.lock cannot make the audit run anything else.
    """
    if not isinstance(cmd, str):
        return None
    try:
        argv = shlex.split(cmd)
    except ValueError:  # an unclosed quote
        return None
    if len(argv) < 3 or argv[:2] != ["python", "-m"]:
        return None
    return argv if re.fullmatch(r"stages\.[a-z_0-9]+", argv[2]) else None


def rerun_stage(root: Path, stage: str, tolerance: float) -> CheckResult:
    """Re-execute a stage from its locked inputs in a scratch copy; compare every output.

    Each output (files and folders) must have the md5 dvc.lock records for it; with a
    tolerance, JSON values may differ by that much and other files' bytes may differ.
    """
    name = f"rerun {stage} reproduces its outputs"
    lock = _load_lock(root).get("stages", {})
    if stage not in lock:
        return CheckResult(
            name, False, f"stage {stage!r} is not in dvc.lock; known: {', '.join(sorted(lock))}"
        )
    entry = lock[stage]
    outs = [o for o in entry.get("outs", []) if o.get("path")]
    if not outs:
        return CheckResult(name, False, f"stage {stage!r} has no locked outputs to compare")
    command = stage_command(entry.get("cmd"))
    if command is None:
        return CheckResult(
            name,
            False,
            f"dvc.lock runs {entry.get('cmd')!r} for {stage}, not a kdflow stage command "
            "(python -m stages.NAME …); refusing to rerun it",
        )
    metrics_paths = [str(o["path"]) for o in outs if str(o["path"]).startswith("metrics/")]
    with tempfile.TemporaryDirectory(prefix="kdflow-audit-") as scratch:
        work = Path(scratch) / "ws"
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True
        )
        if listing.returncode != 0:
            return CheckResult(name, False, f"{root} is not a git checkout; cannot copy its files")
        tracked = listing.stdout.split("\0")
        for rel in filter(None, tracked):
            if (root / rel).is_file():
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / rel, work / rel)
        for dep in entry.get("deps", []):
            source = root / dep["path"]
            target = work / dep["path"]
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            elif source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{Path(scratch) / 'mlflow.db'}"}
        threads = _recorded_threads(root, metrics_paths)
        if threads is not None:  # CPU results depend on it; runtime.threads still wins
            env["OMP_NUM_THREADS"] = str(threads)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.pop("KDFLOW_PARENT_RUN_ID", None)
        env.pop("DVC_STAGE", None)
        out = subprocess.run(
            command,
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if out.returncode != 0:
            tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
            return CheckResult(name, False, f"rerun failed (exit {out.returncode}): {tail}")
        differences: list[str] = []
        tolerated: list[str] = []
        for entry_out in outs:
            rel, locked = str(entry_out["path"]), str(entry_out.get("md5", ""))
            fresh = work / rel
            md5 = dvc_md5(fresh)
            if md5 == locked:
                continue
            if md5 is None:
                differences.append(f"{rel}: not written by the rerun")
                continue
            compare = _folder_differences if locked.endswith(".dir") else _file_differences
            found = compare(root, rel, locked, fresh, tolerance)
            differences += found
            if not found:
                tolerated.append(rel)
    if differences:
        return CheckResult(
            name, False, f"{len(differences)} difference(s): " + "; ".join(differences[:4])
        )
    paths = ", ".join(str(o["path"]) for o in outs)
    how = "" if threads is None else f" (rerun with {threads} torch thread(s), as recorded)"
    if tolerance == 0:
        return CheckResult(name, True, f"{paths} bit-identical to dvc.lock{how}")
    other = f"; other bytes in {', '.join(tolerated)}" if tolerated else ""
    return CheckResult(name, True, f"{paths} within {tolerance} of dvc.lock{other}{how}")


def _recorded_threads(root: Path, metrics_paths: list[str]) -> int | None:
    """Return the torch thread count a stage recorded in its metrics, if it did."""
    for rel in metrics_paths:
        try:
            threads = json.loads((root / rel).read_text()).get("torch_threads")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(threads, int) and threads > 0:
            return threads
    return None


def environment() -> dict[str, Any]:
    """Return the environment the audit ran in (python, packages, torch and CUDA)."""
    info: dict[str, Any] = {"packages": package_versions(), "platform": sys.platform}
    try:
        import torch

        info["cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        info["threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info
