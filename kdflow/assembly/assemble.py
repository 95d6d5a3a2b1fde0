"""Assembly (§7.3, §8): chain independently trained modules into one network, and account for it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from kdflow.errors import KdflowError
from kdflow.models.base import KDModel

# Per-module figures copied from each module stage's metrics into the assembled model's.
MODULE_KEYS = ("val_acc", "test_acc", "best_epoch", "epochs", "stage")


def assemble(
    skeleton: KDModel,
    modules: Sequence[nn.Module],
    *,
    stem: nn.Module | None = None,
    head: nn.Module | None = None,
) -> KDModel:
    """Return `skeleton` with the weights of `modules` (and of `stem`, `head` when given) loaded.

    The result is an ordinary zoo model of the skeleton's architecture, so it is saved,
    loaded and evaluated like any other.
    """
    if len(modules) != len(skeleton.stages):
        raise KdflowError(
            f"cannot assemble {len(modules)} modules into {type(skeleton).__name__} with "
            f"{len(skeleton.stages)} stages"
        )
    parts: list[tuple[str, nn.Module, nn.Module | None]] = [
        (f"stage {i}", stage, module)
        for i, (stage, module) in enumerate(zip(skeleton.stages, modules, strict=True))
    ]
    parts += [("stem", skeleton.stem, stem), ("head", skeleton.head, head)]
    for name, part, source in parts:
        if source is None:  # keep the skeleton's own (the m2mKD student's stem and head)
            continue
        try:
            part.load_state_dict(source.state_dict())
        except RuntimeError as exc:
            raise KdflowError(
                f"the trained {name} does not fit {type(skeleton).__name__} ({str(exc)[:120]}); "
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
