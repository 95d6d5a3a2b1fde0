"""Aggregations behind the report: mean ± std over seeds and paired differences between cells."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from kdflow.report.stats import paired_difference


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


def seeds_of(
    records: list[dict[str, Any]], teacher: str, method: str, protocol: str, key: str = "test_acc"
) -> dict[int, float]:
    """Return {seed: value of `key`} of one student cell (teacher, method, protocol)."""
    return {
        r["seed"]: r[key]
        for r in records
        if r.get("kind") == "distill"
        and (r["teacher"], r["method"], r["protocol"]) == (teacher, method, protocol)
        and r.get(key) is not None
    }


def paired_comparisons(
    records: list[dict[str, Any]], protocol: str, key: str = "test_acc"
) -> list[dict[str, Any]]:
    """Return per method the paired MCMI − MLL difference and each teacher's gain over none.

    Rows: {"method", "mcmi_vs_mll", "mll_vs_none", "mcmi_vs_none"}, each a PairedDifference
    over the seeds both sides share (None where one side is missing).
    """
    methods = sorted(
        {
            r["method"]
            for r in records
            if r.get("kind") == "distill" and r["protocol"] == protocol and r["teacher"] != "none"
        }
    )
    baseline = seeds_of(records, "none", "none", protocol, key)
    rows = []
    for method in methods:
        mll = seeds_of(records, "mll", method, protocol, key)
        mcmi = seeds_of(records, "mcmi", method, protocol, key)
        rows.append(
            {
                "method": method,
                "mcmi_vs_mll": paired_difference(mll, mcmi),
                "mll_vs_none": paired_difference(baseline, mll),
                "mcmi_vs_none": paired_difference(baseline, mcmi),
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
