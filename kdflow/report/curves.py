"""Students' validation curves: per cell (teacher, method, protocol) the mean over its seeds.

The curves come from each student stage's per-epoch table (plots/distill/<name>.tsv). They
go into the report as a figure and into reports/curves.tsv in long form (epoch, val_acc,
series), which the top-level `plots:` of dvc.yaml overlays by series.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from kdflow.errors import KdflowError

Cell = tuple[str, str, str]


def read_curve(path: Path, column: str = "val_acc") -> list[float]:
    """Return `column` of a per-epoch table, one value per epoch in order."""
    if not path.is_file():
        raise KdflowError(f"{path} not found; rerun the stage that trained this model")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or column not in rows[0]:
        raise KdflowError(f"{path}: no `{column}` column; rerun the stage that wrote it")
    return [float(row[column]) for row in rows]


def student_curves(records: list[dict[str, Any]], plots: Path) -> dict[Cell, list[float]]:
    """Return {(teacher, method, protocol): mean val_acc per epoch over the cell's seeds}.

    Seeds of a cell share the epoch count; a cell whose seeds differ is cut to the shortest.
    """
    per_cell: dict[Cell, list[list[float]]] = defaultdict(list)
    for record in records:
        if record.get("kind") != "distill":
            continue
        cell = (record["teacher"], record["method"], record["protocol"])
        per_cell[cell].append(read_curve(plots / f"{record['name']}.tsv"))
    curves = {}
    for cell, runs in sorted(per_cell.items()):
        epochs = min(len(run) for run in runs)
        curves[cell] = [statistics.fmean(run[e] for run in runs) for e in range(epochs)]
    return curves


def series_name(cell: Cell) -> str:
    """Return a cell's series label: `mll-kd-full`, or `no teacher-full` for the baseline."""
    teacher, method, protocol = cell
    return f"no teacher-{protocol}" if teacher == "none" else f"{teacher}-{method}-{protocol}"


def curves_tsv(curves: dict[Cell, list[float]]) -> str:
    """Return the curves in long form: `epoch`, `val_acc`, `series`, tab-separated."""
    lines = ["epoch\tval_acc\tseries"]
    for cell, values in curves.items():
        lines += [f"{e + 1}\t{v:.6g}\t{series_name(cell)}" for e, v in enumerate(values)]
    return "\n".join(lines) + "\n"
