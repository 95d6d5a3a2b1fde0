"""Helpers shared by the tests that build tiny pipelines in scratch copies of the repo."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r": epoch (\d+)/")  # a stage's progress line after each epoch
# What a stage needs to run from a scratch copy (no data, no outputs, no caches).
REPO_FILES = (
    "params.yaml",
    "dvc.yaml",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots/series.json",
)
REPO_TREES = ("kdflow", "stages")
# The assembly section of a tiny whole-pipeline run whose teacher is a cnn3: the m2mKD teacher
# must share the meta model's module boundaries, so target and student are cnn3s too.
TINY_ASSEMBLY: dict[str, Any] = {
    "target": "cnn3",
    "student": "cnn3",
    "seeds": [0],
    "teacher_incubate_epochs": 1,
    **{
        section: {"epochs": 1, "batch_size": 64, "lr": 0.05}
        for section in ("meta", "incubate", "finetune", "m2m", "m2m_finetune")
    },
    "e2e": {"batch_size": 64, "lr": 0.05},
}


# The one tiny whole pipeline the report and audit tests share (tests/conftest.py builds it
# once per session): 500 MNIST-1D samples, cnn3 teachers, one KD method, two protocols, one
# seed (tests/report covers the aggregation over seeds), 2-epoch students. Single-threaded,
# because on a loaded machine idle torch threads slow these models 10-100×; deterministic,
# so that the audit's rerun of a stage is bit-identical.
TINY_PIPELINE: dict[str, Any] = {
    "data": {"num_samples": 500},
    "runtime": {"device": "cpu", "threads": 1, "deterministic": True},
    "teacher": {"model": "cnn3", "optim": {"epochs": 3, "batch_size": 64}},
    "mcmi": {"optim": {"epochs": 2, "batch_size": 64}},
    "distill": {
        "student": "cnn3",
        "teachers": ["mll", "mcmi"],
        "methods": ["kd"],
        "protocols": ["full", "zeroshot"],
        "seeds": [0],
        "protocol_params": {"zeroshot": {"omit": [9]}},
        "optim": {"epochs": 2, "batch_size": 64},
    },
    "assembly": TINY_ASSEMBLY,
}


def pipeline_env(repo: Path) -> dict[str, str]:
    """Return the environment for dvc and kdflow in `repo`: venv first, its own MLflow store."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo / 'mlflow.db'}"
    env["DVC_SITE_CACHE_DIR"] = str(repo.parent / "dvc-site-cache")
    env["DVC_NO_ANALYTICS"] = "1"
    env["COLUMNS"] = "1000"  # rich folds tables to the terminal width otherwise
    env.pop("KDFLOW_PARENT_RUN_ID", None)
    return env


def run_in_pipeline(
    repo: Path,
    command: list[str],
    cwd: Path | None = None,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `command` (in `cwd`, default `repo`) with repo's pipeline environment; capture output.

    `env` adds variables to that environment.
    """
    return subprocess.run(
        command,
        cwd=cwd or repo,
        env=pipeline_env(repo) | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def copy_pipeline(repo: Path, root: Path) -> Path:
    """Copy a built pipeline repository (MLflow store and DVC cache included) to root/repo."""
    copy = root / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    return copy


def copy_repo(root: Path) -> Path:
    """Copy the repository's code and pipeline files into the new folder `root`; return it."""
    root.mkdir(parents=True)
    for name in REPO_FILES:
        if (REPO / name).exists():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in REPO_TREES:
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    return root


def merge_params(base: dict[str, Any], override: dict[str, Any]) -> None:
    """Merge `override` into `base` in place, section by section."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key, {}), dict):
            merge_params(base.setdefault(key, {}), value)
        else:
            base[key] = value


def set_params(repo: Path, override: dict[str, Any]) -> None:
    """Rewrite repo/params.yaml with `override` merged in."""
    path = repo / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    merge_params(raw, override)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def signal_after_epoch(
    command: list[str], repo: Path, env: dict[str, str], epoch: int, sig: signal.Signals
) -> tuple[int, str]:
    """Start `command`, send `sig` once it reports `epoch` done; return (exit code, stderr)."""
    proc = subprocess.Popen(
        command,
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    # Each epoch line comes after that epoch's checkpoint is on disk, and reading blocks until
    # the stage writes it, so the signal lands in the next epoch.
    for line in proc.stderr:
        seen.append(line)
        done = EPOCH_LINE.search(line)
        if done and int(done.group(1)) >= epoch:
            break
    assert proc.poll() is None, f"the stage ended before epoch {epoch}:\n{''.join(seen)}"
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=120)
    return proc.returncode, "".join(seen) + rest


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a test identity; return its stripped stdout."""
    identity = ["-c", "user.name=kdflow-tests", "-c", "user.email=tests@kdflow.invalid"]
    return subprocess.run(
        ["git", *identity, *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


class StageProcesses:
    """Stage processes started side by side, each with its own MLflow store and stderr file.

    SQLite does not like concurrent writers, and a file cannot fill up like a pipe.
    """

    def __init__(self, repo: Path, template: Path) -> None:
        self.repo, self.template = repo, template
        self.procs: list[tuple[str, subprocess.Popen[str], Any]] = []
        self.stores: dict[str, str] = {}  # slug → the process's MLflow tracking URI

    def start(self, stage: str, *args: str) -> int:
        """Start `python -m stages.<stage> args…`; return its handle for `wait`."""
        slug = "-".join([stage, *args]).replace("--", "")
        store = self.repo.parent / f"{slug}.db"
        shutil.copyfile(self.template, store)
        self.stores[slug] = f"sqlite:///{store}"
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["MLFLOW_TRACKING_URI"] = self.stores[slug]
        env.pop("KDFLOW_PARENT_RUN_ID", None)
        stderr = (self.repo.parent / f"{slug}.stderr").open("w+")
        proc = subprocess.Popen(
            [sys.executable, "-m", f"stages.{stage}", *args],
            cwd=self.repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
        self.procs.append((slug, proc, stderr))
        return len(self.procs) - 1

    def wait(self, *handles: int) -> None:
        """Wait for the given processes; fail with the stderr of the first that failed."""
        for handle in handles:
            slug, proc, stderr = self.procs[handle]
            proc.wait(timeout=300)
            stderr.seek(0)
            assert proc.returncode == 0, f"{slug} failed:\n{stderr.read()}"

    def stop(self) -> None:
        """Kill whatever is still running (after a failure) and close the stderr files."""
        for _, proc, stderr in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            stderr.close()
