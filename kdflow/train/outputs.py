"""Checks on what a training stage writes, and writing it (model, metrics, per-epoch TSV)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdflow.errors import KdflowError
from kdflow.io import StagedOutputs, json_text, staged_outputs, tsv_text
from kdflow.train.checkpoint import save_model

UNIT_INTERVAL_SUFFIXES = ("_acc", "_ece")


def check_metrics(metrics: dict[str, Any], num_classes: int, path: str | Path) -> list[str]:
    """Return the names of the checks run on a metrics record; raise KdflowError on a failure."""
    checks = []
    for key, value in metrics.items():
        if key.endswith(UNIT_INTERVAL_SUFFIXES) and isinstance(value, float):
            checks.append(f"{key} in [0, 1]")
            if not 0.0 <= value <= 1.0:
                raise KdflowError(f"{path}: {key} = {value} is outside [0, 1]; output not written")
        if key.endswith("_cmi"):
            checks.append(f"{key} >= 0")
            if not (math.isfinite(value) and value >= -1e-9):
                raise KdflowError(f"{path}: {key} = {value} is negative or not finite")
        if key.endswith("per_class_acc"):
            checks.append(f"{key} has {num_classes} entries")
            if len(value) != num_classes:
                raise KdflowError(f"{path}: {key} has {len(value)} entries, expected {num_classes}")
    return checks


def write_training_outputs(
    *,
    model: nn.Module,
    model_meta: dict[str, Any],
    metrics: dict[str, Any],
    history: list[dict[str, float]],
    model_path: str | Path,
    metrics_path: str | Path,
    plots_path: str | Path,
    num_classes: int,
    out: StagedOutputs | None = None,
) -> list[str]:
    """Check the metrics, then write model, metrics JSON and per-epoch TSV; return checks run.

    The three appear together or, when any write fails, not at all; with `out` they join
    that staging (and appear when its other outputs do).
    """
    checks = check_metrics(metrics, num_classes, metrics_path)
    metrics = {**metrics, "validation": "passed"}
    with contextlib.nullcontext(out) if out is not None else staged_outputs() as staged:
        save_model(model_path, model, model_meta, staged)
        staged.path(plots_path).write_text(tsv_text(history))
        staged.path(metrics_path).write_text(json_text(metrics))
    return checks


def check_logits(logits: torch.Tensor, where: str | Path) -> list[str]:
    """Return the checks run on a model's logits (N×C); raise KdflowError on a failure."""
    finite = torch.isfinite(logits)
    if not bool(finite.all()):
        rows = (~finite).any(dim=1).nonzero().flatten()[:5].tolist()
        raise KdflowError(
            f"{where}: {int((~finite).any(dim=1).sum())} sample(s) have non-finite logits "
            f"(rows {rows}); output not written"
        )
    sums = logits.double().softmax(dim=1).sum(dim=1)
    worst = float((sums - 1).abs().max()) if len(sums) else 0.0
    if worst > 1e-5:
        raise KdflowError(f"{where}: probabilities sum to 1 ± {worst:.2e} (> 1e-5); not written")
    return ["logits finite", "probabilities sum to 1 within 1e-5"]
