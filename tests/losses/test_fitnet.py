"""fitnet against an explicit 1×1 regression and block-average pooling."""

from __future__ import annotations

import pytest
import torch

from kdflow.errors import KdflowError
from kdflow.losses import OutputShapes, build_method


def test_fitnet_matches_reference(layout, batch_factory, block_average) -> None:
    student, teacher = layout
    batch = batch_factory(student, teacher)
    method = build_method("fitnet", student, teacher, 50, beta=7.0).double()
    f_s = batch.students[0].features[len(student.features) // 2]
    f_t = batch.teacher.features[len(teacher.features) // 2]
    size = tuple(min(a, b) for a, b in zip(f_s.shape[2:], f_t.shape[2:], strict=True))
    f_s, f_t = block_average(f_s, size), block_average(f_t, size)
    weight = method.regressor.weight.reshape(f_t.shape[1], f_s.shape[1])
    regressed = torch.einsum("oc,bc...->bo...", weight, f_s)
    regressed = regressed + method.regressor.bias.reshape(1, -1, *[1] * len(size))
    expected = ((regressed - f_t) ** 2).sum() / f_t.numel()
    torch.testing.assert_close(method(batch)["fitnet"], 7.0 * expected)


def test_fitnet_uses_a_linear_regressor_for_flat_features(batch_factory) -> None:
    student = OutputShapes(features=[(6,), (12,), (5,)], embedding_dim=5, num_classes=10)
    teacher = OutputShapes(features=[(9,), (20,)], embedding_dim=20, num_classes=10)
    batch = batch_factory(student, teacher)
    method = build_method("fitnet", student, teacher, 50, beta=1.0).double()
    assert isinstance(method.regressor, torch.nn.Linear)
    regressed = batch.students[0].features[1] @ method.regressor.weight.T + method.regressor.bias
    expected = ((regressed - batch.teacher.features[1]) ** 2).mean()
    torch.testing.assert_close(method(batch)["fitnet"], expected)


def test_fitnet_is_zero_with_identity_regressor_and_equal_features(layout, batch_factory) -> None:
    student, _ = layout
    batch = batch_factory(student, student)
    batch.teacher.features = [f.detach().clone() for f in batch.students[0].features]
    method = build_method("fitnet", student, student, 50).double()
    channels = student.features[len(student.features) // 2][0]
    with torch.no_grad():
        method.regressor.weight.copy_(torch.eye(channels).reshape(method.regressor.weight.shape))
        method.regressor.bias.zero_()
    assert method(batch)["fitnet"].abs() <= 1e-7


def test_fitnet_refuses_hint_features_of_different_rank() -> None:
    student = OutputShapes(features=[(8, 16), (16, 8)], embedding_dim=16, num_classes=10)
    teacher = OutputShapes(features=[(8, 4, 4), (16, 2, 2)], embedding_dim=16, num_classes=10)
    with pytest.raises(KdflowError, match="same rank"):
        build_method("fitnet", student, teacher, 50)
