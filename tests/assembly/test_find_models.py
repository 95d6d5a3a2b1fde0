"""`evaluate` scores the models of the current params grid and nothing else.

Never the meta or module checkpoints, and never a model file an older grid left on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdflow.errors import KdflowError
from kdflow.evaluation import ASSEMBLY_MODELS, find_models, grid_models


def _touch(models: Path, metrics: Path, name: str) -> None:
    (models / name).with_suffix(".pt").parent.mkdir(parents=True, exist_ok=True)
    (models / f"{name}.pt").write_bytes(b"")
    (metrics / name).with_suffix(".json").parent.mkdir(parents=True, exist_ok=True)
    (metrics / f"{name}.json").write_text(json.dumps({"name": name}))


def test_the_grid_names_teachers_students_baselines_and_final_assembly_models():
    names = grid_models(["mcmi", "mll"], ["kd"], ["full", "zeroshot"], [1, 0], [0, 2])

    assert names == [
        "teacher/mcmi",
        "teacher/mll",
        "distill/mcmi-kd-full-s0",
        "distill/mcmi-kd-full-s1",
        "distill/mcmi-kd-zeroshot-s0",
        "distill/mcmi-kd-zeroshot-s1",
        "distill/mll-kd-full-s0",
        "distill/mll-kd-full-s1",
        "distill/mll-kd-zeroshot-s0",
        "distill/mll-kd-zeroshot-s1",
        "distill/none-none-full-s0",
        "distill/none-none-full-s1",
        "distill/none-none-zeroshot-s0",
        "distill/none-none-zeroshot-s1",
        *(f"assembly/{n}-s{seed}" for n in sorted(ASSEMBLY_MODELS) for seed in (0, 2)),
    ]


def test_only_the_grid_s_models_are_found_not_stale_or_intermediate_files(tmp_path):
    models, metrics = tmp_path / "models", tmp_path / "metrics"
    names = grid_models(["mll"], ["kd"], ["full"], [0], [0])
    for name in names:
        _touch(models, metrics, name)
    # Left by an older grid (a removed seed and method) and the assembly's intermediates.
    stale = [
        "distill/mll-kd-full-s1",
        "distill/mll-dkd-full-s0",
        "assembly/meta-s0",
        "assembly/dma-s1",
    ]
    for name in [*stale, "assembly/incubate/s0/0", "assembly/m2m/s0/1"]:
        _touch(models, metrics, name)

    entries = find_models(models, metrics, names)

    assert [e["name"] for e in entries] == names
    dma = next(e for e in entries if e["name"] == "assembly/dma-s0")
    assert dma["kind"] == "assembly"
    assert dma["stage_metrics"] == {"name": "assembly/dma-s0"}


def test_a_grid_model_without_its_files_names_them_and_the_fix(tmp_path):
    models, metrics = tmp_path / "models", tmp_path / "metrics"
    names = grid_models(["mll"], ["kd"], ["full"], [0, 1], [0])
    for name in names:
        if name != "distill/mll-kd-full-s1":
            _touch(models, metrics, name)
    (metrics / "teacher" / "mcmi.json").unlink()

    with pytest.raises(KdflowError) as caught:
        find_models(models, metrics, names)

    message = str(caught.value)
    assert str(metrics / "teacher" / "mcmi.json") in message
    assert str(models / "distill" / "mll-kd-full-s1.pt") in message
    assert message.endswith("run the training stages first (dvc repro)")
