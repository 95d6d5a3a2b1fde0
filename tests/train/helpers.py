"""Helpers the trainer tests share: a stand-in for a kill, and an exact state comparison."""

from __future__ import annotations

import torch


class Interrupted(Exception):
    """Stands in for a kill between two epochs."""


def assert_same_state(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    """Assert two state dicts hold the same names and bit-identical tensors."""
    assert left.keys() == right.keys()
    different = [name for name in left if not torch.equal(left[name], right[name])]
    assert different == []
