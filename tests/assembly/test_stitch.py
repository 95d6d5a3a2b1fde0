"""Stitch layers adapt any width pair on flat, 1-D and 2-D activations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdflow.assembly import StitchedModule, stitch_layer

WIDTHS = [(16, 16), (16, 64), (64, 16), (3, 7), (1, 1)]
SPATIAL = [(), (40,), (9, 5)]  # flat (MLP), 1-D signal, 2-D image


@pytest.mark.parametrize("spatial", SPATIAL, ids=["flat", "1d", "2d"])
@pytest.mark.parametrize(("in_width", "out_width"), WIDTHS)
def test_stitch_changes_width_only(spatial, in_width, out_width):
    layer = stitch_layer((in_width, *spatial), out_width)
    x = torch.randn(3, in_width, *spatial, requires_grad=True)

    y = layer(x)

    assert y.shape == (3, out_width, *spatial)
    expected_type = {0: nn.Linear, 1: nn.Conv1d, 2: nn.Conv2d}[len(spatial)]
    assert isinstance(layer, expected_type)
    if len(spatial):
        assert layer.kernel_size == (1,) * len(spatial)  # mixes channels, never positions
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_a_1x1_conv_is_the_same_linear_map_at_every_position():
    layer = stitch_layer((4, 6), 3)
    x = torch.randn(2, 4, 6)

    expected = torch.einsum("oc,bcl->bol", layer.weight[:, :, 0], x) + layer.bias[:, None]

    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_stitched_module_runs_a_module_between_two_widths():
    inner = nn.Conv1d(8, 32, 3, padding=1)  # a "student module" of widths 8 → 32
    stitched = StitchedModule(stitch_layer((16, 10), 8), inner, stitch_layer((32, 10), 64))

    out = stitched(torch.randn(2, 16, 10))

    assert out.shape == (2, 64, 10)
    assert stitched.module is inner
