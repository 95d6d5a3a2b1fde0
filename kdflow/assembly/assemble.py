"""Assembly: chain independently trained modules into one network, and account for it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from kdflow.assembly.hybrid import HybridModel
from kdflow.errors import KdflowError
from kdflow.models.base import KDModel

# Per-module figures copied from each module stage's metrics into the assembled model's.
MODULE_KEYS = ("val_acc", "test_acc", "best_epoch", "epochs", "stage")


def assemble(skeleton: KDModel, hybrids: Sequence[HybridModel]) -> KDModel:
    """Return `skeleton` with the trained parts of the K module hybrids loaded, in order.

    Module 0's hybrid gives the stem, module K−1's the head, each hybrid its stage (stitches
    dropped): every tensor of the result comes from a trained module checkpoint, none from
    the skeleton's initialisation or the meta model. The result is an ordinary zoo model of
    the skeleton's architecture, so it is saved, loaded and evaluated like any other.
    """
    name = type(skeleton).__name__
    if len(hybrids) != len(skeleton.stages):
        raise KdflowError(
            f"cannot assemble {len(hybrids)} modules into {name} with {len(skeleton.stages)} stages"
        )
    indices = [hybrid.index for hybrid in hybrids]
    if indices != list(range(len(hybrids))):
        raise KdflowError(f"the modules to assemble are modules {indices}, not 0..K−1 in order")
    if not hybrids[0].owns_stem or not hybrids[-1].owns_head:
        raise KdflowError(
            "module 0 must carry the trained stem and the last module the trained head; "
            "rerun the module stages with the current code"
        )
    parts: list[tuple[str, nn.Module, nn.Module]] = [
        (f"stage {i}", stage, hybrid.stage)
        for i, (stage, hybrid) in enumerate(zip(skeleton.stages, hybrids, strict=True))
    ]
    parts += [("stem", skeleton.stem, hybrids[0].stem), ("head", skeleton.head, hybrids[-1].head)]
    for part_name, part, source in parts:
        try:
            part.load_state_dict(source.state_dict())
        except RuntimeError as exc:
            raise KdflowError(
                f"the trained {part_name} does not fit {name} ({str(exc)[:120]}); "
                "rerun the module stages with the current assembly params"
            ) from None
    return skeleton


def combine_module_records(module_metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Return the per-module figures of an assembled model (all of them reproducible)."""
    return {
        "modules": [
            {"module": i, **{k: m[k] for k in MODULE_KEYS if k in m}}
            for i, m in enumerate(module_metrics)
        ]
    }


def training_time_totals(
    meta_seconds: float, module_seconds: Sequence[float], stage_seconds: float
) -> dict[str, float]:
    """Return the training-time totals of an assembled model (for MLflow, never a DVC output).

    `train_seconds` is the compute spent, every stage one after another (meta model, each
    module stage, this stage); `train_seconds_parallel` is the wall time when the K module
    stages run side by side, as they may (they depend on the meta model only).
    """
    return {
        "meta_seconds": meta_seconds,
        "module_seconds_sum": round(sum(module_seconds), 2),
        "module_seconds_max": max(module_seconds),
        "stage_seconds": stage_seconds,
        "train_seconds": round(meta_seconds + sum(module_seconds) + stage_seconds, 2),
        "train_seconds_parallel": round(meta_seconds + max(module_seconds) + stage_seconds, 2),
    }


def recorded_time_totals(
    meta_stage: str, module_stages: Sequence[str], stage_seconds: float
) -> dict[str, float]:
    """Return training_time_totals from the upstream stages' run records ({} if one lacks it).

    The records (`.kdflow/runs/`) are untracked: outputs restored from a DVC cache have none.
    """
    from kdflow.io import read_run_record

    records = [read_run_record(s) for s in (meta_stage, *module_stages)]
    seconds = [r.get("train_seconds") if r else None for r in records]
    if not all(isinstance(s, int | float) for s in seconds):
        return {}
    meta_seconds, *module_seconds = (float(s) for s in seconds)  # type: ignore[arg-type]
    return training_time_totals(meta_seconds, module_seconds, stage_seconds)
