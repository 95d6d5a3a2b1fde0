"""What the robustness tests share: tiny params, stage commands, output snapshots."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PYTHON = sys.executable
VENV_BIN = Path(PYTHON).parent
DISTILL_EPOCHS = 8  # ~0.1 s each: the interrupt tests have a few epochs between two signals
META_EPOCHS = 6
DISTILL_ARGS = ("--teacher", "mll", "--method", "kd", "--protocol", "full", "--seed", "0")
DISTILL_NAME = "mll-kd-full-s0"
# Tiny and single-threaded: on a loaded machine idle torch threads slow these models 10-100×.
# tracking.required is false so that the reference distillation (conftest.py) may fall back to
# the local store when its tracking server does not answer.
TINY = {
    "data": {"num_samples": 500},
    "tracking": {"required": False},
    "runtime": {"threads": 1, "deterministic": True, "device": "cpu"},
    "teacher": {"model": "cnn3", "optim": {"epochs": 2, "batch_size": 64}},
    "distill": {"methods": ["kd"], "optim": {"epochs": DISTILL_EPOCHS, "batch_size": 64}},
    "assembly": {"meta": {"epochs": META_EPOCHS, "batch_size": 64}},
}
# Everything a stage may write; a failed or interrupted stage must leave all of it as it was.
OUTPUT_DIRS = ("models", "metrics", "plots", "reports", "data/prepared", "checkpoints")
# Wall time and the MLflow run id differ between two identical runs by nature: they are in
# the untracked run record (.kdflow/runs/<stage>.json), never in an output.
VOLATILE: frozenset[str] = frozenset()
DISTILL_RECORD = Path(".kdflow") / "runs" / f"distill@{DISTILL_NAME}.json"


def stage_command(name: str, *args: str) -> list[str]:
    """Return the command that runs stage `name` as users run it."""
    return [PYTHON, "-m", f"stages.{name}", *args]


def run(command: list[str], repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `command` in `repo`; return it finished (stdout and stderr captured)."""
    return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """Return `done` after asserting it succeeded."""
    assert done.returncode == 0, f"{done.args} failed:\n{done.stderr}"
    return done


def make_env(tracking_uri: str) -> dict[str, str]:
    """Return a stage environment: the venv first, the given tracking store, no flow parent."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("KDFLOW_PARENT_RUN_ID", None)
    return env


def snapshot(repo: Path) -> dict[str, str]:
    """Return the sha256 of every file under the output folders (hidden temp files included)."""
    digests = {}
    for folder in OUTPUT_DIRS:
        for path in sorted((repo / folder).rglob("*")):
            if path.is_file():
                digests[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def copy_workspace(workspace: Path, dest: Path) -> Path:
    """Copy the session's workspace (code, params, outputs, git) to `dest`; return it."""
    shutil.copytree(workspace, dest, symlinks=True)
    return dest


def comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Return a metrics record without the fields that differ between identical runs."""
    return {k: v for k, v in metrics.items() if k not in VOLATILE}


def read_json(path: Path) -> dict[str, Any]:
    """Return a JSON file's content."""
    return json.loads(path.read_text())
