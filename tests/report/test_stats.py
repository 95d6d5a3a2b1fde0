"""Paired 95% intervals over seeds, against a hand computation."""

from __future__ import annotations

import math

import pytest

from kdflow.report.stats import format_difference, paired_difference


def test_the_interval_is_the_t_interval_of_the_seedwise_differences() -> None:
    a = {0: 0.80, 1: 0.70, 2: 0.75}
    b = {0: 0.83, 1: 0.72, 2: 0.79}  # differences 0.03, 0.02, 0.04: mean 0.03, sd 0.01
    diff = paired_difference(a, b)
    assert diff is not None
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t_{0.975, 2} from a table
    assert diff.n == 3
    assert diff.mean == pytest.approx(0.03)
    assert (diff.low, diff.high) == pytest.approx((0.03 - half, 0.03 + half))
    assert diff.verdict == "higher"
    assert format_difference(diff) == "+3.00 [+0.52, +5.48] (n=3)"


def test_pairing_cancels_a_shared_seed_effect_that_one_std_would_not() -> None:
    # Seeds differ by a lot; the teacher effect is a steady +1 point.
    a = {0: 0.50, 1: 0.70, 2: 0.90, 3: 0.60}
    b = {s: v + 0.01 for s, v in a.items()}
    diff = paired_difference(a, b)
    assert diff is not None and diff.verdict == "higher"
    assert diff.low == pytest.approx(0.01) and diff.high == pytest.approx(0.01)


def test_only_shared_seeds_are_paired_and_unclear_differences_say_so() -> None:
    diff = paired_difference({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.52, 1: 0.58, 5: 0.9})
    assert diff is not None and diff.n == 2
    assert diff.mean == pytest.approx(0.0)
    assert diff.verdict == "no evidence either way"
    assert diff.low < 0 < diff.high


def test_one_seed_gives_no_interval_and_no_verdict() -> None:
    diff = paired_difference({0: 0.5}, {0: 0.9})
    assert diff is not None and diff.n == 1
    assert diff.verdict == "no evidence either way"
    assert format_difference(diff) == "+40.00 (n=1, no interval)"
    assert paired_difference({0: 0.5}, {1: 0.6}) is None
