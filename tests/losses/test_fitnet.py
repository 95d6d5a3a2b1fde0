"""fitnet: its hint stage and RepDistiller's ConvReg for images, signals and flat features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdflow.errors import KdflowError
from kdflow.losses import OutputShapes, build_method
from kdflow.losses.fitnet import build_regressor, hint_stage


def shapes(*features: tuple[int, ...]) -> OutputShapes:
    """Return output shapes with these stage features (the embedding is irrelevant here)."""
    return OutputShapes(features=list(features), embedding_dim=4, num_classes=10)


@pytest.mark.parametrize(
    ("num_stages", "stage"),
    # RepDistiller's hint_layer = 2 of [stem, stages…, pool] (VGG: [blocks…, pool]):
    # ResNet/WRN (3 stages) → stage 2 of 3; ResNet50 (4) → 2 of 4; VGG (5 blocks) → 3 of 5.
    [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2)],
)
def test_hint_stage_is_repdistillers_hint_layer(num_stages: int, stage: int) -> None:
    assert hint_stage(num_stages) == stage


def layer_types(regressor: nn.Module) -> list[type]:
    return [type(layer) for layer in regressor]


@pytest.mark.parametrize(
    ("student", "teacher", "conv_type", "kernel", "stride", "padding"),
    [
        ((8, 4, 4), (16, 4, 4), nn.Conv2d, (1, 1), (1, 1), (0, 0)),  # equal sizes
        ((8, 8, 8), (16, 4, 4), nn.Conv2d, (3, 3), (2, 2), (1, 1)),  # student 2× larger
        ((8, 4, 4), (16, 8, 8), nn.ConvTranspose2d, (4, 4), (2, 2), (1, 1)),  # 2× smaller
        ((8, 5, 6), (16, 4, 4), nn.Conv2d, (2, 3), (1, 1), (0, 0)),  # larger, valid conv
        ((8, 16), (12, 16), nn.Conv1d, (1,), (1,), (0,)),
        ((8, 16), (12, 8), nn.Conv1d, (3,), (2,), (1,)),
        ((8, 8), (12, 16), nn.ConvTranspose1d, (4,), (2,), (1,)),
        ((8, 9), (12, 7), nn.Conv1d, (3,), (1,), (0,)),
    ],
)
def test_regressor_is_repdistillers_convreg(
    student, teacher, conv_type, kernel, stride, padding
) -> None:
    regressor = build_regressor(student, teacher)
    norm = nn.BatchNorm1d if len(student) == 2 else nn.BatchNorm2d
    assert layer_types(regressor) == [conv_type, norm, nn.ReLU]
    conv = regressor[0]
    assert (conv.in_channels, conv.out_channels) == (student[0], teacher[0])
    assert (conv.kernel_size, conv.stride, conv.padding) == (kernel, stride, padding)
    assert conv.bias is not None  # ConvReg's conv keeps its bias before the BN
    assert regressor[1].num_features == teacher[0]
    assert regressor.training
    assert regressor(torch.randn(3, *student)).shape == (3, *teacher)


def test_flat_features_get_linear_bn_relu() -> None:
    regressor = build_regressor((6,), (9,))
    assert layer_types(regressor) == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert regressor(torch.randn(3, 6)).shape == (3, 9)


@pytest.mark.parametrize(
    ("student", "teacher"), [((8, 3, 3), (16, 4, 4)), ((8, 5), (8, 7)), ((8, 8, 2), (8, 4, 4))]
)
def test_regressor_refuses_sizes_convreg_does_not_handle(student, teacher) -> None:
    with pytest.raises(KdflowError, match="fitnet"):
        build_regressor(student, teacher)


def test_fitnet_refuses_hint_features_of_different_rank() -> None:
    student = shapes((8, 16), (16, 8))
    teacher = shapes((8, 4, 4), (16, 2, 2))
    with pytest.raises(KdflowError, match="same rank"):
        build_method("fitnet", student, teacher, 50)


def test_fitnet_regresses_the_hint_stages(layout, batch_factory) -> None:
    student, teacher = layout
    method = build_method("fitnet", student, teacher, 50, beta=7.0).double()
    assert (method.student_stage, method.teacher_stage) == (1, 1)
    batch = batch_factory(student, teacher)
    f_s = batch.students[0].features[1]
    f_t = batch.teacher.features[1]
    expected = ((method.regressor(f_s) - f_t) ** 2).mean()
    terms = method(batch)
    assert terms.keys() == {"ce", "fitnet"}  # no KD term by default
    torch.testing.assert_close(terms["fitnet"], 7.0 * expected)


def test_fitnet_is_zero_with_identity_regressor_and_equal_features(layout, batch_factory) -> None:
    student, _ = layout
    batch = batch_factory(student, student)
    # Stage outputs end in a ReLU, so the hint is non-negative and survives the regressor's.
    batch.students[0].features = [
        f.detach().relu().requires_grad_() for f in batch.students[0].features
    ]
    batch.teacher.features = [f.detach().clone() for f in batch.students[0].features]
    method = build_method("fitnet", student, student, 50).double().eval()
    conv, norm, _ = method.regressor
    channels = conv.in_channels
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).reshape(conv.weight.shape))
        conv.bias.zero_()
        norm.running_var.fill_(1 - norm.eps)  # eval-mode BN: (x − 0) / sqrt(1 − eps + eps)
    assert method(batch)["fitnet"].abs() <= 1e-7
