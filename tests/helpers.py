"""Helpers shared by the tests that build tiny pipelines in scratch copies of the repo."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
# What a stage needs to run from a scratch copy (no data, no outputs, no caches).
REPO_FILES = (
    "params.yaml",
    "dvc.yaml",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
)
REPO_TREES = ("kdflow", "stages")


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


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a test identity; return its stripped stdout."""
    identity = ["-c", "user.name=kdflow-tests", "-c", "user.email=tests@kdflow.invalid"]
    return subprocess.run(
        ["git", *identity, *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
