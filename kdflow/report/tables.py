"""Aggregations behind the report: mean ± std over seeds and the MCMI − MLL gains."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any


def mean_std(values: list[float]) -> tuple[float, float]:
    """Return the mean and sample std (0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(mean: float, std: float, seeds: int, scale: float = 100.0) -> str:
    """Return 'm ± s' in percent (or 'm' for one seed)."""
    if seeds < 2:
        return f"{mean * scale:.2f}"
    return f"{mean * scale:.2f} ± {std * scale:.2f}"


def group_students(
    records: list[dict[str, Any]], key: str = "test_acc"
) -> dict[tuple, list[float]]:
    """Return {(teacher, method, protocol): [value per seed]} for the student records."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for record in records:
        if record.get("kind") == "distill" and record.get(key) is not None:
            groups[(record["teacher"], record["method"], record["protocol"])].append(record[key])
    return dict(groups)


def teacher_gains(groups: dict[tuple, list[float]], protocol: str) -> list[dict[str, Any]]:
    """Return per method the MCMI − MLL difference of means, significant only when > both stds."""
    rows = []
    methods = sorted({m for (t, m, p) in groups if p == protocol and t != "none"})
    for method in methods:
        mll, mcmi = groups.get(("mll", method, protocol)), groups.get(("mcmi", method, protocol))
        if not mll or not mcmi:
            continue
        (m1, s1), (m2, s2) = mean_std(mll), mean_std(mcmi)
        gain = m2 - m1
        threshold = max(s1, s2)
        rows.append(
            {
                "method": method,
                "mll": (m1, s1, len(mll)),
                "mcmi": (m2, s2, len(mcmi)),
                "gain": gain,
                "threshold": threshold,
                "significant": len(mll) > 1 and len(mcmi) > 1 and abs(gain) > threshold,
            }
        )
    return rows


SUMMARY_DIGITS = 4  # a summary for people and `dvc metrics diff`; eval.json has every digit


def summary(records: list[dict[str, Any]]) -> dict[str, float | int]:
    """Return the headline numbers under flat, stable keys (metrics/summary.json).

    `teacher.<t>.test_acc|test_cmi`, `student.<teacher>-<method>-<protocol>.acc_mean|acc_std|n`
    (over seeds; the no-teacher baseline is teacher `none`), `assembly.<model>.test_acc`.
    """
    out: dict[str, float | int] = {}
    for record in records:
        kind, name = record["name"].split("/", 1)
        if kind == "teacher":
            out[f"teacher.{name}.test_acc"] = round(record["test_acc"], SUMMARY_DIGITS)
            out[f"teacher.{name}.test_cmi"] = round(record["test_cmi"], SUMMARY_DIGITS)
        elif kind == "assembly":
            out[f"assembly.{name}.test_acc"] = round(record["test_acc"], SUMMARY_DIGITS)
    for (teacher, method, protocol), values in group_students(records).items():
        mean, std = mean_std(values)
        cell = f"student.{teacher}-{method}-{protocol}"
        out[f"{cell}.acc_mean"] = round(mean, SUMMARY_DIGITS)
        out[f"{cell}.acc_std"] = round(std, SUMMARY_DIGITS)
        out[f"{cell}.n"] = len(values)
    return dict(sorted(out.items()))
