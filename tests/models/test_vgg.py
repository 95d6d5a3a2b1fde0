"""VGG-BN: published size, and pools that stop before tiny inputs vanish."""

from __future__ import annotations

import pytest
import torch

from kdflow.models import build_model


def test_vgg8_parameter_count_matches_published() -> None:
    model = build_model("vgg8", (3, 32, 32), 100)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(3.96e6, rel=0.02)


@pytest.mark.parametrize(
    ("input_shape", "spatial_sizes"),
    [
        ((3, 32, 32), [16, 8, 4, 4, 4]),
        ((1, 8, 8), [4, 2, 1, 1, 1]),
        ((1, 40), [20, 10, 5, 5, 5]),
        ((3, 64, 64), [32, 16, 8, 4, 4]),
    ],
)
def test_feature_sizes(input_shape: tuple[int, ...], spatial_sizes: list[int]) -> None:
    model = build_model("vgg11", input_shape, 10).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, *input_shape)).features
    assert [f.shape[-1] for f in features] == spatial_sizes


def test_two_pixel_input_pools_once() -> None:
    model = build_model("vgg8", (1, 2, 2), 10).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 1, 2, 2)).features
    assert [tuple(f.shape[2:]) for f in features] == [(1, 1)] * 5
