"""CIFAR ResNets: sizes against the published figures and per-stage feature shapes."""

from __future__ import annotations

import pytest
import torch

from kdflow.models import build_model


def _num_parameters(model: torch.nn.Module) -> int:
    """Return the number of parameters of model."""
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "num_classes", "published"),
    [
        ("resnet20", 10, 0.27e6),  # He et al. 2016, CIFAR-10
        ("resnet56", 100, 0.86e6),  # CRD table, CIFAR-100
        ("resnet110", 100, 1.74e6),
        ("resnet8x4", 100, 1.23e6),
        ("resnet32x4", 100, 7.43e6),
    ],
)
def test_parameter_count_matches_published(name: str, num_classes: int, published: float) -> None:
    model = build_model(name, (3, 32, 32), num_classes)
    assert _num_parameters(model) == pytest.approx(published, rel=0.02)


@pytest.mark.parametrize(
    ("input_shape", "feature_shapes"),
    [
        ((3, 32, 32), [(16, 32, 32), (32, 16, 16), (64, 8, 8)]),
        ((1, 40), [(16, 40), (32, 20), (64, 10)]),
    ],
)
def test_resnet20_feature_shapes(
    input_shape: tuple[int, ...], feature_shapes: list[tuple[int, ...]]
) -> None:
    model = build_model("resnet20", input_shape, 10).eval()
    with torch.no_grad():
        output = model.forward_features(torch.randn(2, *input_shape))
    assert [tuple(f.shape[1:]) for f in output.features] == feature_shapes


def test_stages_hold_depth_minus_two_over_six_blocks() -> None:
    model = build_model("resnet110", (3, 32, 32), 10)
    assert [len(stage) for stage in model.stages] == [18, 18, 18]
    assert len(model.shallow_stage(1)) == 1
