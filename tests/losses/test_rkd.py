"""rkd against pairwise and triplet loops over the batch."""

from __future__ import annotations

import itertools

import torch

from kdflow.losses import build_method


def smooth_l1(x: torch.Tensor) -> torch.Tensor:
    """Huber with threshold 1: 0.5·x² below 1 in magnitude, |x| − 0.5 above."""
    return torch.where(x.abs() < 1, 0.5 * x**2, x.abs() - 0.5)


def reference_distances(e: torch.Tensor) -> torch.Tensor:
    """Pairwise distances (0 on the diagonal) divided by their mean over distinct pairs."""
    size = len(e)
    d = torch.zeros(size, size, dtype=e.dtype)
    for i, j in itertools.permutations(range(size), 2):
        d[i, j] = (e[i] - e[j]).norm()
    return d / (d.sum() / (size * (size - 1)))


def reference_angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at e_i between e_j and e_k; 0 where a side has length 0."""
    size = len(e)
    cosines = torch.zeros(size, size, size, dtype=e.dtype)
    for i, j, k in itertools.product(range(size), repeat=3):
        if i not in (j, k):
            u, v = e[j] - e[i], e[k] - e[i]
            cosines[i, j, k] = u.dot(v) / (u.norm() * v.norm())
    return cosines


def test_rkd_matches_reference(layout, batch_factory) -> None:
    student, teacher = layout
    batch = batch_factory(student, teacher, batch_size=5)
    e_s = batch.students[0].embedding
    # One far-away teacher sample pushes some distance differences past the Huber threshold.
    e_t = batch.teacher.embedding = batch.teacher.embedding * torch.tensor([[10.0]] + [[1.0]] * 4)
    distance_gap = reference_distances(e_s) - reference_distances(e_t)
    assert distance_gap.abs().max() > 1
    distance = smooth_l1(distance_gap).mean()
    angle = smooth_l1(reference_angles(e_s) - reference_angles(e_t)).mean()
    terms = build_method("rkd", student, teacher, 50, beta=2.0)(batch)
    torch.testing.assert_close(terms["rkd"], 2.0 * (25 * distance + 50 * angle))


def test_rkd_is_zero_when_student_equals_teacher(layout, batch_factory) -> None:
    student, teacher = layout
    batch = batch_factory(student, student)
    batch.teacher.embedding = batch.students[0].embedding.detach().clone()
    assert build_method("rkd", student, student, 50)(batch)["rkd"].abs() <= 1e-7
