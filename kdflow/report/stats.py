"""Paired comparisons over seeds: the mean difference with its 95% t-interval.

Two results that share a seed (an MCMI and an MLL student of the same subset and initial
weights, or a method and the no-teacher baseline) are compared seed by seed, so the
seed-to-seed spread that both share cancels out of the difference.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """The mean of b − a over the shared seeds, its 95% interval and the seeds used."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def verdict(self) -> str:
        """Return 'higher', 'lower' or 'no evidence either way' from the interval alone."""
        if self.n >= 2 and self.low > 0:
            return "higher"
        if self.n >= 2 and self.high < 0:
            return "lower"
        return "no evidence either way"


def paired_difference(a: dict[int, float], b: dict[int, float]) -> PairedDifference | None:
    """Return the paired difference b − a over the seeds both have, or None without one.

    With one shared seed the interval is unbounded (−inf, inf): one pair says nothing
    about the spread.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    differences = [b[s] - a[s] for s in seeds]
    mean = statistics.fmean(differences)
    if len(seeds) < 2:
        return PairedDifference(mean, -math.inf, math.inf, 1)
    from scipy.stats import t

    half = t.ppf(0.5 + CONFIDENCE / 2, df=len(seeds) - 1) * statistics.stdev(differences)
    half /= math.sqrt(len(seeds))
    return PairedDifference(mean, mean - half, mean + half, len(seeds))


def format_difference(diff: PairedDifference, scale: float = 100.0) -> str:
    """Return 'm [lo, hi] (n=k)' in percentage points."""
    if diff.n < 2:
        return f"{diff.mean * scale:+.2f} (n=1, no interval)"
    return (
        f"{diff.mean * scale:+.2f} [{diff.low * scale:+.2f}, {diff.high * scale:+.2f}] (n={diff.n})"
    )
