"""Shared settings and small builders for the model-assembly tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from kdflow.assembly import MetaModel, build_meta_model
from kdflow.models import build_model
from kdflow.models.base import KDModel

NUM_CLASSES = 5


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Run each test on one intra-op thread, then restore the previous count; yields nothing."""
    # Tiny batches gain nothing from threads, and idle threads spin on a loaded machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def seeded(name: str, input_shape: tuple[int, ...], seed: int = 0) -> KDModel:
    """Return zoo model `name` built under torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return build_model(name, input_shape, NUM_CLASSES)


def trained_looking_meta(name: str, input_shape: tuple[int, ...]) -> MetaModel:
    """Return the meta model of `name` with non-trivial batch-norm statistics and affine terms.

    Fresh batch norms are the identity (mean 0, var 1, weight 1, bias 0); tests that check
    frozen parts stay untouched need values a wrong update would visibly change.
    """
    meta = build_meta_model(seeded(name, input_shape))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in meta.modules():
            if isinstance(layer, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                n = layer.num_features
                layer.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                layer.running_var.copy_(1 + 0.1 * torch.rand(n, generator=generator))
                layer.weight.copy_(1 + 0.1 * torch.randn(n, generator=generator))
                layer.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return meta
