"""Allowed ranges of the distillation methods' hyper-parameters (docs/algorithms.md).

Each method declares `ranges` beside its `defaults`, one Range per key; DistillMethod
checks every value against it when the method is built, so an override such as a
negative weight fails at once, in one line, instead of training a nonsense objective.
Importing this module imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from kdflow.errors import KdflowError


@dataclass(frozen=True)
class Range:
    """An interval of allowed values, optionally restricted to whole numbers."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False  # True: the low end itself is excluded
    high_open: bool = False
    integer: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if math.isnan(value) or (self.integer and not float(value).is_integer()):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        """Return the range in words, e.g. '> 0', '≥ 0', 'in [0, 1)', 'an integer ≥ 1'."""
        low = f"{self.low:g}"
        high = f"{self.high:g}"
        if math.isinf(self.high):
            text = f"{'>' if self.low_open else '≥'} {low}"
        elif math.isinf(self.low):
            text = f"{'<' if self.high_open else '≤'} {high}"
        else:
            text = (
                f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
            )
        return f"an integer {text}" if self.integer else text


WEIGHT = Range(low=0.0)  # a loss weight: 0 switches its term off
POSITIVE = Range(low=0.0, low_open=True)  # temperatures, which divide
EPOCHS = Range(low=0.0)  # a warm-up length; 0 means none
MOMENTUM = Range(low=0.0, high=1.0, high_open=True)  # 1 would never move the memory
COUNT = Range(low=1.0, integer=True)  # sizes: negatives, embedding widths
SEED = Range(low=0.0, integer=True)


def check_ranges(method: str, values: Mapping[str, float], ranges: Mapping[str, Range]) -> None:
    """Raise KdflowError naming method, key, value and range for the first value outside it."""
    for key, value in values.items():
        allowed = ranges[key]
        if value not in allowed:
            raise KdflowError(
                f"{method}: hyper-parameter {key} = {value!r} is out of range; "
                f"allowed: {allowed.describe()}"
            )
