"""Shared settings for the model-zoo tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run each test on one intra-op thread, then restore the previous count; yields nothing."""
    # Batches of two gain nothing from threads, and OpenMP spin-waits slow tests tenfold
    # when other processes share the cores.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
