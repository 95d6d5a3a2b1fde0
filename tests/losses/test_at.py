"""at against a stage-by-stage formula with explicit pooling and normalisation."""

from __future__ import annotations

import pytest
import torch

from kdflow.errors import KdflowError
from kdflow.losses import OutputShapes, build_method


def test_at_matches_reference(layout, batch_factory, block_average) -> None:
    student, teacher = layout
    batch = batch_factory(student, teacher)
    total = 0.0
    for f_s, f_t in zip(batch.students[0].features, batch.teacher.features, strict=False):
        size = tuple(min(a, b) for a, b in zip(f_s.shape[2:], f_t.shape[2:], strict=True))
        maps = []
        for f in (block_average(f_s, size), block_average(f_t, size)):
            energy = (f**2).sum(dim=1).reshape(len(f), -1) / f.shape[1]
            maps.append(energy / energy.norm(dim=1, keepdim=True))
        total = total + ((maps[0] - maps[1]) ** 2).mean()
    terms = build_method("at", student, teacher, 50, beta=3.0)(batch)
    torch.testing.assert_close(terms["at"], 3.0 * total)


def test_at_pairs_only_the_first_min_stages(batch_factory) -> None:
    student, teacher = (
        OutputShapes(features=[(4, 8), (4, 8)], embedding_dim=4, num_classes=10),
        OutputShapes(features=[(6, 8), (6, 8), (6, 3)], embedding_dim=6, num_classes=10),
    )
    assert build_method("at", student, teacher, 50).num_pairs == 2
    assert torch.isfinite(
        build_method("at", student, teacher, 50)(batch_factory(student, teacher))["at"]
    )


def test_at_is_zero_when_student_equals_teacher(layout, batch_factory) -> None:
    student, _ = layout
    batch = batch_factory(student, student)
    batch.teacher.features = [f.detach().clone() for f in batch.students[0].features]
    assert build_method("at", student, student, 50)(batch)["at"].abs() <= 1e-7


def test_at_refuses_flat_features() -> None:
    flat = OutputShapes(features=[(16,), (16,)], embedding_dim=16, num_classes=10)
    with pytest.raises(KdflowError, match="spatial"):
        build_method("at", flat, flat, 50)
