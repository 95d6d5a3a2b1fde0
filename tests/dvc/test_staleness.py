"""A change reruns exactly the stages it affects, on a copy of the repro'd tiny pipeline.

Each case edits the copy, asks `dvc status` which stages are stale, and compares the set
with the stages that must run; then it restores the copy. Status lists the stages whose
own inputs changed (or that never ran): the aggregates downstream of a changed student run
only once its new outputs exist, which the last two tests check the other way round: they
rerun a stage with `dvc repro -f` and find every stage up to date afterwards (same inputs,
same bytes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kdflow.config import AssemblyParams
from tests.conftest import VENV_BIN
from tests.helpers import (
    TINY_ASSEMBLY,
    TINY_PIPELINE,
    copy_pipeline,
    git,
    run_in_pipeline,
    set_params,
)

DISTILL = TINY_PIPELINE["distill"]
# evaluate declares the grid (distill.teachers, methods, protocols, seeds): it is stale
# the moment the grid grows.
GRID_READER = {"evaluate"}


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
    """Return the stages whose own inputs changed (or that never ran): `dvc status`."""
    done = run_in_pipeline(repo, [str(VENV_BIN / "dvc"), "status", "--json"])
    assert done.returncode == 0, done.stdout + done.stderr
    return {name.removeprefix("dvc.yaml:") for name in json.loads(done.stdout or "{}")}


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


def _assembly_stages(seed: int) -> set[str]:
    modules = AssemblyParams().modules
    per_seed = ("meta", "assemble", "m2m_assemble", "dma_e2e", "m2m_e2e", "dma_scratch")
    return {f"{kind}@{seed}" for kind in (*per_seed, "m2m_scratch")} | {
        f"{kind}@{i}-{seed}" for kind in ("incubate", "m2m") for i in modules
    }


SEEDS, TEACHERS, PROTOCOLS = DISTILL["seeds"], DISTILL["teachers"], DISTILL["protocols"]
CASES = {
    "add a seed": (
        _edit_params({"distill": {"seeds": [*SEEDS, 7]}}),
        _students(TEACHERS, DISTILL["methods"], PROTOCOLS, [7])
        | _baselines(PROTOCOLS, [7])
        | GRID_READER,
    ),
    "add an assembly seed": (
        _edit_params({"assembly": {"seeds": [*TINY_ASSEMBLY["seeds"], 3]}}),
        _assembly_stages(3) | GRID_READER,
    ),
    "add a method": (
        _edit_params({"distill": {"methods": [*DISTILL["methods"], "at"]}}),
        _students(TEACHERS, ["at"], PROTOCOLS, SEEDS) | GRID_READER,
    ),
    "change a protocol knob": (
        _edit_params({"distill": {"protocol_params": {"zeroshot": {"omit": [8]}}}}),
        _students(TEACHERS, DISTILL["methods"], ["zeroshot"], SEEDS)
        | _baselines(["zeroshot"], SEEDS),
    ),
    "change a method hyper-parameter": (
        _edit_params({"distill": {"method_params": {"kd": {"temperature": 2.0}}}}),
        _students(TEACHERS, ["kd"], PROTOCOLS, SEEDS),
    ),
    "change a method outside the grid": (
        _edit_params({"distill": {"method_params": {"at": {"beta": 500.0}}}}),
        set(),
    ),
    "comment in a loss file outside the grid": (_comment_in("kdflow/losses/at.py"), set()),
    "comment in the grid's loss file": (
        _comment_in("kdflow/losses/kd.py"),
        # and the m2mKD fine-tunes, which declare kd.py for assembly.finetune_kd
        _students(TEACHERS, ["kd"], PROTOCOLS, SEEDS)
        | {
            f"{kind}@{seed}"
            for kind in ("m2m_assemble", "m2m_e2e", "m2m_scratch")
            for seed in TINY_ASSEMBLY["seeds"]
        },
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


def test_the_git_tracked_summary_makes_metrics_diff_and_exp_show_work(pipeline: Path) -> None:
    dvc = str(VENV_BIN / "dvc")
    shown = run_in_pipeline(pipeline, [dvc, "metrics", "show", "--json"])
    assert shown.returncode == 0, shown.stderr
    assert "failed to load" not in shown.stdout + shown.stderr
    (workspace,) = json.loads(shown.stdout).values()
    assert list(workspace["data"]) == ["metrics/summary.json"]
    summary = workspace["data"]["metrics/summary.json"]["data"]
    assert 20 <= len(summary) <= 120  # a few dozen numbers, not one per epoch and class

    path = pipeline / "metrics" / "summary.json"
    original = path.read_text()
    changed = json.loads(original)
    changed["teacher.mll.test_acc"] += 0.01
    path.write_text(json.dumps(changed, indent=2) + "\n")
    try:
        diff = run_in_pipeline(pipeline, [dvc, "metrics", "diff", "HEAD", "--json"])
        assert diff.returncode == 0, diff.stderr
        (entry,) = json.loads(diff.stdout)["metrics/summary.json"].values()
        assert entry["diff"] == pytest.approx(0.01)
        table = run_in_pipeline(pipeline, [dvc, "exp", "show", "--only-changed", "--csv"])
        assert table.returncode == 0, table.stderr
        header = table.stdout.splitlines()[0].split(",")
        assert "teacher.mll.test_acc" in header and len(header) < 40
    finally:
        path.write_text(original)
