"""A change reruns exactly the stages it affects, on a copy of the repro'd tiny pipeline.

Each case edits the copy, asks `dvc repro --dry` which stages would run, and compares the
set with the stages that must run; then it restores the copy. The last two rerun a stage
with `dvc repro -f` and find every stage up to date afterwards (same inputs, same bytes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VENV_BIN
from tests.helpers import TINY_PIPELINE, copy_pipeline, git, run_in_pipeline, set_params

DISTILL = TINY_PIPELINE["distill"]
AGGREGATES = {"evaluate", "report"}
RUNNING = re.compile(r"Running stage '([^']+)'")


def _students(teachers: list[str], methods: list[str], protocols: list[str], seeds: list[int]):
    return {
        f"distill@{t}-{m}-{p}-{s}"
        for t in teachers
        for m in methods
        for p in protocols
        for s in seeds
    }


def _baselines(protocols: list[str], seeds: list[int]) -> set[str]:
    return {f"baseline@{p}-{s}" for p in protocols for s in seeds}


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a private copy of the repro'd tiny pipeline, committed as it stands."""
    repo = copy_pipeline(tiny_pipeline["repo"], tmp_path_factory.mktemp("staleness"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "repro'd")
    return repo


def _stale(repo: Path) -> set[str]:
    """Return the stages `dvc repro` would run now (downstream of a change included)."""
    done = run_in_pipeline(repo, [str(VENV_BIN / "dvc"), "repro", "--dry"])
    assert done.returncode == 0, done.stdout + done.stderr
    return set(RUNNING.findall(done.stdout))


def _restore(repo: Path) -> None:
    git(repo, "checkout", "-q", "--", ".")
    assert _stale(repo) == set()


def _edit_params(override: dict[str, Any]) -> Callable[[Path], None]:
    return lambda repo: set_params(repo, override)


def _comment_in(path: str) -> Callable[[Path], None]:
    def edit(repo: Path) -> None:
        with (repo / path).open("a") as handle:
            handle.write("# a comment changes the file's hash, not what the code does\n")

    return edit


SEEDS, TEACHERS, PROTOCOLS = DISTILL["seeds"], DISTILL["teachers"], DISTILL["protocols"]
CASES = {
    "add a seed": (
        _edit_params({"distill": {"seeds": [*SEEDS, 7]}}),
        _students(TEACHERS, DISTILL["methods"], PROTOCOLS, [7])
        | _baselines(PROTOCOLS, [7])
        | AGGREGATES,
    ),
    "add a method": (
        _edit_params({"distill": {"methods": [*DISTILL["methods"], "at"]}}),
        _students(TEACHERS, ["at"], PROTOCOLS, SEEDS) | AGGREGATES,
    ),
    "change a protocol knob": (
        _edit_params({"distill": {"protocol_params": {"zeroshot": {"omit": [8]}}}}),
        _students(TEACHERS, DISTILL["methods"], ["zeroshot"], SEEDS)
        | _baselines(["zeroshot"], SEEDS)
        | AGGREGATES,
    ),
    "change a method hyper-parameter": (
        _edit_params({"distill": {"method_params": {"kd": {"temperature": 2.0}}}}),
        _students(TEACHERS, ["kd"], PROTOCOLS, SEEDS) | AGGREGATES,
    ),
    "change a method outside the grid": (
        _edit_params({"distill": {"method_params": {"at": {"beta": 500.0}}}}),
        set(),
    ),
    "comment in a loss file outside the grid": (_comment_in("kdflow/losses/at.py"), set()),
    "comment in the grid's loss file": (
        _comment_in("kdflow/losses/kd.py"),
        _students(TEACHERS, ["kd"], PROTOCOLS, SEEDS) | AGGREGATES,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_change_makes_exactly_its_stages_stale(pipeline: Path, case: str) -> None:
    edit, must_run = CASES[case]
    edit(pipeline)
    try:
        assert _stale(pipeline) == must_run
    finally:
        _restore(pipeline)


@pytest.mark.parametrize("stage", ["prepare", f"distill@mll-kd-full-{SEEDS[0]}"])
def test_a_forced_rerun_leaves_every_stage_up_to_date(pipeline: Path, stage: str) -> None:
    done = run_in_pipeline(pipeline, [str(VENV_BIN / "dvc"), "repro", "-f", "-s", stage])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Running stage '{stage}'" in done.stdout
    assert _stale(pipeline) == set()
    assert git(pipeline, "status", "--porcelain", "--", "dvc.lock") == ""
