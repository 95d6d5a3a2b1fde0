"""The report's aggregations against hand-computed values (docs/algorithms.md)."""

from __future__ import annotations

import math

import pytest

from kdflow.report.tables import fmt, group_students, mean_std, paired_comparisons, summary


def _student(teacher: str, method: str, protocol: str, seed: int, **values: float) -> dict:
    return {
        "name": f"distill/{teacher}-{method}-{protocol}-s{seed}",
        "kind": "distill",
        "teacher": teacher,
        "method": method,
        "protocol": protocol,
        "seed": seed,
        **values,
    }


def test_mean_std_is_the_mean_and_the_sample_std():
    # (0.8, 0.9, 1.0): mean 0.9, squared deviations 0.01 + 0 + 0.01 over n - 1 = 2 → std 0.1.
    mean, std = mean_std([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9, abs=1e-12)
    assert std == pytest.approx(0.1, abs=1e-12)
    # (0.6, 0.8): (0.01 + 0.01) / 1 → std √0.02, not the population std 0.1.
    mean, std = mean_std([0.6, 0.8])
    assert mean == pytest.approx(0.7, abs=1e-12)
    assert std == pytest.approx(math.sqrt(0.02), abs=1e-12)


def test_mean_std_of_one_seed_has_zero_std():
    assert mean_std([0.42]) == (0.42, 0.0)


def test_fmt_writes_percent_with_std_only_for_several_seeds():
    assert fmt(0.9, 0.1, 3) == "90.00 ± 10.00"
    assert fmt(0.875, 0.0125, 2) == "87.50 ± 1.25"
    assert fmt(0.5, 0.0, 1) == "50.00"
    assert fmt(0.5, 0.3, 1) == "50.00"  # one seed: no std, whatever is passed
    assert fmt(0.5, 0.25, 2, scale=1.0) == "0.50 ± 0.25"


def test_group_students_collects_seeds_per_teacher_method_protocol():
    records = [
        {"name": "teacher/mll", "kind": "teacher", "test_acc": 0.99},
        _student("mll", "kd", "full", 0, test_acc=0.80),
        _student("mcmi", "kd", "full", 0, test_acc=0.85),
        _student("mll", "kd", "full", 1, test_acc=0.82),
        _student("mll", "kd", "zeroshot", 0, test_acc=0.70, omitted_acc=0.25),
        _student("none", "none", "zeroshot", 0, test_acc=0.65, omitted_acc=0.0),
    ]

    assert group_students(records) == {
        ("mll", "kd", "full"): [0.80, 0.82],
        ("mcmi", "kd", "full"): [0.85],
        ("mll", "kd", "zeroshot"): [0.70],
        ("none", "none", "zeroshot"): [0.65],
    }
    # Another key: records without it (the full-data students) are left out; 0.0 is kept.
    assert group_students(records, "omitted_acc") == {
        ("mll", "kd", "zeroshot"): [0.25],
        ("none", "none", "zeroshot"): [0.0],
    }


T_975_DF2 = 4.302652729911275  # t_{0.975} with 2 degrees of freedom, from a table


def test_paired_comparisons_pair_each_cell_with_the_other_teacher_and_the_baseline():
    accs = {
        # kd: MCMI − MLL per seed +0.03, +0.02, +0.04 → mean 0.03, sd 0.01: interval > 0.
        ("mll", "kd"): [0.80, 0.70, 0.75],
        ("mcmi", "kd"): [0.83, 0.72, 0.79],
        # dkd: +0.02, −0.02, 0.00 → an interval around 0, no verdict.
        ("mll", "dkd"): [0.80, 0.82, 0.81],
        ("mcmi", "dkd"): [0.82, 0.80, 0.81],
        ("none", "none"): [0.60, 0.61, 0.62],
    }
    records = [
        _student(teacher, method, "full", seed, test_acc=value)
        for (teacher, method), values in accs.items()
        for seed, value in enumerate(values)
    ]
    records.append(_student("mcmi", "kd", "fewshot", 0, test_acc=0.1))  # another protocol

    rows = {row["method"]: row for row in paired_comparisons(records, "full")}

    assert sorted(rows) == ["dkd", "kd"]
    kd = rows["kd"]["mcmi_vs_mll"]
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert (kd.mean, kd.low, kd.high, kd.n) == pytest.approx((0.03, 0.03 - half, 0.03 + half, 3))
    assert kd.verdict == "higher"
    dkd = rows["dkd"]["mcmi_vs_mll"]
    assert dkd.mean == pytest.approx(0.0, abs=1e-12) and dkd.verdict == "no evidence either way"
    # MLL kd − none per seed: +0.20, +0.09, +0.13.
    gain = rows["kd"]["mll_vs_none"]
    diffs = [0.20, 0.09, 0.13]
    mean, sd = sum(diffs) / 3, math.sqrt(sum((d - sum(diffs) / 3) ** 2 for d in diffs) / 2)
    assert (gain.mean, gain.high) == pytest.approx((mean, mean + T_975_DF2 * sd / math.sqrt(3)))


def test_paired_comparisons_pair_only_shared_seeds_and_read_the_key_asked_for():
    records = [
        _student("mll", "kd", "zeroshot", 0, test_acc=0.9, omitted_acc=0.10),
        _student("mll", "kd", "zeroshot", 1, test_acc=0.9, omitted_acc=0.20),
        _student("mcmi", "kd", "zeroshot", 1, test_acc=0.9, omitted_acc=0.50),
        _student("mcmi", "kd", "zeroshot", 2, test_acc=0.9, omitted_acc=0.70),
    ]

    (row,) = paired_comparisons(records, "zeroshot", "omitted_acc")

    diff = row["mcmi_vs_mll"]
    assert (diff.n, diff.mean) == (1, pytest.approx(0.30))  # seed 1 only
    assert diff.verdict == "no evidence either way"
    assert row["mll_vs_none"] is None and row["mcmi_vs_none"] is None
    assert paired_comparisons(records, "full") == []


def test_summary_has_flat_stable_keys_for_every_teacher_cell_and_assembled_model():
    records = [
        {"name": "teacher/mll", "kind": "teacher", "test_acc": 0.912345, "test_cmi": 0.0512345},
        {"name": "assembly/dma", "kind": "assembly", "test_acc": 0.8},
        _student("mll", "kd", "full", 0, test_acc=0.8),
        _student("mll", "kd", "full", 1, test_acc=0.9),
        _student("none", "none", "full", 0, test_acc=0.7),
    ]

    result = summary(records)

    assert result == {
        "assembly.dma.test_acc": 0.8,
        "student.mll-kd-full.acc_mean": 0.85,
        "student.mll-kd-full.acc_std": round(math.sqrt(0.005), 4),
        "student.mll-kd-full.n": 2,
        "student.none-none-full.acc_mean": 0.7,
        "student.none-none-full.acc_std": 0.0,
        "student.none-none-full.n": 1,
        "teacher.mll.test_acc": 0.9123,
        "teacher.mll.test_cmi": 0.0512,
    }
    assert list(result) == sorted(result)
    # The order of the records (seeds) does not change a digit.
    assert summary(records[::-1]) == result
