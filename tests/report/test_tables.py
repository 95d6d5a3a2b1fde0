"""The report's aggregations against hand-computed values (ALGORITHMS §6 and §9)."""

from __future__ import annotations

import math

import pytest

from kdflow.report.tables import fmt, group_students, mean_std, summary, teacher_gains


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


def test_teacher_gains_are_significant_only_beyond_the_std():
    groups = {
        # kd: MCMI 0.91 vs MLL 0.81, both stds √0.0002 ≈ 0.0141 → a significant +0.10.
        ("mll", "kd", "full"): [0.80, 0.82],
        ("mcmi", "kd", "full"): [0.90, 0.92],
        # dkd: gain +0.02 but the stds are √0.005 ≈ 0.0707 → not significant.
        ("mll", "dkd", "full"): [0.70, 0.80],
        ("mcmi", "dkd", "full"): [0.72, 0.82],
        # pkt: MLL better by 0.10, stds √0.0002 → significant, negative gain.
        ("mll", "pkt", "full"): [0.90, 0.92],
        ("mcmi", "pkt", "full"): [0.80, 0.82],
        # sp: MLL std 0, MCMI std √0.02 ≈ 0.141 > gain 0.10: the larger std decides.
        ("mll", "sp", "full"): [0.80, 0.80],
        ("mcmi", "sp", "full"): [0.80, 1.00],
        # at: only one teacher → no row; the baseline and other protocols never count.
        ("mll", "at", "full"): [0.5, 0.6],
        ("none", "none", "full"): [0.1, 0.2],
        ("mcmi", "kd", "zeroshot"): [0.1, 0.2],
    }

    rows = {row["method"]: row for row in teacher_gains(groups, "full")}

    assert sorted(rows) == ["dkd", "kd", "pkt", "sp"]
    expected = {  # method: (gain, threshold, significant)
        "kd": (0.10, math.sqrt(0.0002), True),
        "dkd": (0.02, math.sqrt(0.005), False),
        "pkt": (-0.10, math.sqrt(0.0002), True),
        "sp": (0.10, math.sqrt(0.02), False),
    }
    for method, (gain, threshold, significant) in expected.items():
        row = rows[method]
        assert row["gain"] == pytest.approx(gain, abs=1e-12), method
        assert row["threshold"] == pytest.approx(threshold, abs=1e-12), method
        assert row["significant"] is significant, method
    assert rows["kd"]["mll"] == pytest.approx((0.81, math.sqrt(0.0002), 2))
    assert rows["kd"]["mcmi"] == pytest.approx((0.91, math.sqrt(0.0002), 2))


def test_a_single_seed_is_never_significant():
    groups = {
        ("mll", "kd", "full"): [0.10],
        ("mcmi", "kd", "full"): [0.90],
        # One side with several seeds is not enough either.
        ("mll", "dkd", "full"): [0.10, 0.11],
        ("mcmi", "dkd", "full"): [0.90],
    }

    rows = {row["method"]: row for row in teacher_gains(groups, "full")}

    assert rows["kd"]["gain"] == pytest.approx(0.80) and rows["kd"]["threshold"] == 0.0
    assert rows["kd"]["significant"] is False
    assert rows["dkd"]["significant"] is False


def test_teacher_gains_of_a_protocol_without_both_teachers_is_empty():
    assert teacher_gains({("none", "none", "full"): [0.5, 0.6]}, "full") == []
    assert teacher_gains({("mll", "kd", "full"): [0.5, 0.6]}, "fewshot") == []


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
