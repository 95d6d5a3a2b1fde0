"""sp against an entry-by-entry Gram-matrix formula."""

from __future__ import annotations

import torch

from kdflow.losses import build_method


def reference_gram(features: torch.Tensor) -> torch.Tensor:
    """G[i, j] = <a_i, a_j> / ‖row i‖, from explicit dot products."""
    flat = features.reshape(len(features), -1)
    size = len(flat)
    gram = torch.stack(
        [torch.stack([flat[i].dot(flat[j]) for j in range(size)]) for i in range(size)]
    )
    return gram / gram.norm(dim=1, keepdim=True)


def test_sp_matches_reference(layout, batch_factory) -> None:
    student, teacher = layout
    batch = batch_factory(student, teacher, batch_size=6)
    g_s = reference_gram(batch.students[0].features[-1])
    g_t = reference_gram(batch.teacher.features[-1])
    expected = ((g_s - g_t) ** 2).sum() / 36
    torch.testing.assert_close(
        build_method("sp", student, teacher, 50, beta=2.0)(batch)["sp"], 2.0 * expected
    )


def test_sp_is_zero_when_student_equals_teacher(layout, batch_factory) -> None:
    student, _ = layout
    batch = batch_factory(student, student)
    batch.teacher.features = [f.detach().clone() for f in batch.students[0].features]
    assert build_method("sp", student, student, 50)(batch)["sp"].abs() <= 1e-7
