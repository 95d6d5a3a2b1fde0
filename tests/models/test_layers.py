"""Layer selection by input rank, pooling guard and initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdflow.errors import KdflowError
from kdflow.models.layers import init_weights, layer_kit, pool_plan


def test_layer_kit_follows_the_number_of_spatial_dims() -> None:
    assert layer_kit((1, 40)).conv is nn.Conv1d
    assert layer_kit((1, 40)).batch_norm is nn.BatchNorm1d
    assert layer_kit((3, 32, 32)).conv is nn.Conv2d
    assert layer_kit((3, 32, 32)).max_pool is nn.MaxPool2d


def test_layer_kit_rejects_other_ranks() -> None:
    with pytest.raises(KdflowError, match="no batch dim"):
        layer_kit((2, 3, 32, 32))


def test_pool_plan_stops_at_one() -> None:
    assert pool_plan((1, 8, 8), [True] * 5) == [True, True, True, False, False]
    assert pool_plan((1, 40, 3), [True, False, True]) == [True, False, False]


def test_init_weights_resets_batch_norm_and_is_seeded() -> None:
    def build() -> nn.Module:
        torch.manual_seed(3)
        return init_weights(nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4)))

    first, second = build(), build()
    assert torch.equal(first[0].weight, second[0].weight)
    assert torch.equal(first[1].weight, torch.ones(4))
    assert torch.equal(first[1].bias, torch.zeros(4))
