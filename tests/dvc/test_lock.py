"""The committed dvc.lock belongs to the committed code: code that changes without a
regenerated lock fails here, before a user's `dvc repro` would silently rerun it."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
import yaml

from tests.conftest import VENV_BIN
from tests.helpers import REPO, copy_repo, git, run_in_pipeline


@pytest.fixture(scope="module")
def status(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Return `dvc status --json` of the committed lock against this tree (no outputs)."""
    repo = copy_repo(tmp_path_factory.mktemp("lock") / "repo")
    shutil.copy2(REPO / "dvc.lock", repo / "dvc.lock")
    git(repo, "init", "-q")
    done = run_in_pipeline(repo, [str(VENV_BIN / "dvc"), "status", "--json"])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "{}")


def test_every_locked_code_dep_has_the_hash_of_the_tree(status: dict[str, Any]) -> None:
    stale = {}
    for stage, entry in status.items():
        for item in entry:
            deps = item.get("changed deps", {}) if isinstance(item, dict) else {}
            # Outputs of other stages are absent here ("deleted"); code must be "unchanged".
            changed = {
                path: how
                for path, how in deps.items()
                if path.split("/")[0] in ("kdflow", "stages") or how != "deleted"
            }
            if changed:
                stale[stage] = changed
    assert stale == {}, "dvc.lock is stale: run `dvc repro` (or `make repro`) and commit it"


def test_every_stage_is_locked_with_its_current_command(status: dict[str, Any]) -> None:
    # A stage new to dvc.yaml, or whose command changed, shows as "changed command".
    changed = [s for s, entry in status.items() if "changed command" in entry]
    assert changed == []


def test_the_lock_holds_exactly_the_stages_of_dvc_yaml(tmp_path) -> None:
    # DVC's own expansion of the matrices over params.yaml: a stage the grid lost must leave
    # the lock, and every stage of the grid must be in it.
    repo = copy_repo(tmp_path / "repo")
    git(repo, "init", "-q")
    done = run_in_pipeline(repo, [str(VENV_BIN / "dvc"), "stage", "list", "--name-only"])
    assert done.returncode == 0, done.stderr
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(done.stdout.split())
