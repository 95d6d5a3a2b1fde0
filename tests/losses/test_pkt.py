"""pkt against an entry-by-entry cosine-kernel formula."""

from __future__ import annotations

import itertools

import torch

from kdflow.losses import build_method


def reference_kernel(e: torch.Tensor) -> torch.Tensor:
    """K[i, j] = (cos(e_i, e_j) + 1) / 2, each row divided by its sum."""
    size = len(e)
    kernel = torch.zeros(size, size, dtype=e.dtype)
    for i, j in itertools.product(range(size), repeat=2):
        kernel[i, j] = (e[i].dot(e[j]) / (e[i].norm() * e[j].norm()) + 1) / 2
    return kernel / kernel.sum(dim=1, keepdim=True)


def test_pkt_matches_reference(layout, batch_factory) -> None:
    student, teacher = layout
    batch = batch_factory(student, teacher, batch_size=6)
    k_s = reference_kernel(batch.students[0].embedding)
    k_t = reference_kernel(batch.teacher.embedding)
    expected = (k_t * (k_t / k_s).log()).mean()
    terms = build_method("pkt", student, teacher, 50, beta=5.0)(batch)
    torch.testing.assert_close(terms["pkt"], 5.0 * expected)


def test_pkt_is_zero_when_student_equals_teacher(layout, batch_factory) -> None:
    student, _ = layout
    batch = batch_factory(student, student)
    batch.teacher.embedding = batch.students[0].embedding.detach().clone()
    assert build_method("pkt", student, student, 50)(batch)["pkt"].abs() <= 1e-7
