"""`evaluate` scores the four final assembly models, never the meta or module checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from kdflow.evaluation import ASSEMBLY_MODELS, find_models


def _touch(models: Path, metrics: Path, name: str) -> None:
    (models / name).with_suffix(".pt").parent.mkdir(parents=True, exist_ok=True)
    (models / f"{name}.pt").write_bytes(b"")
    (metrics / name).with_suffix(".json").parent.mkdir(parents=True, exist_ok=True)
    (metrics / f"{name}.json").write_text(json.dumps({"name": name}))


def test_only_the_final_assembly_models_are_found(tmp_path):
    models, metrics = tmp_path / "models", tmp_path / "metrics"
    for name in ["teacher/mll", "assembly/meta", "assembly/incubate/0", "assembly/m2m/1"]:
        _touch(models, metrics, name)
    for name in ASSEMBLY_MODELS:
        _touch(models, metrics, f"assembly/{name}")

    entries = find_models(models, metrics)

    names = [e["name"] for e in entries]
    assert names == ["teacher/mll"] + sorted(f"assembly/{n}" for n in ASSEMBLY_MODELS)
    dma = next(e for e in entries if e["name"] == "assembly/dma")
    assert dma["kind"] == "assembly"
    assert dma["stage_metrics"] == {"name": "assembly/dma"}
