"""kd and none against straightforward per-sample formulas (docs/algorithms.md)."""

from __future__ import annotations

import torch

from kdflow.losses import build_method


def reference_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of −log softmax(z_i)[y_i], sample by sample."""
    losses = [-(logits[i].softmax(0)[labels[i]]).log() for i in range(len(labels))]
    return torch.stack(losses).mean()


def reference_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · mean_i Σ_c p_t log(p_t / p_s), sample by sample."""
    total = 0.0
    for i in range(len(student)):
        p_t = (teacher[i] / temperature).softmax(0)
        p_s = (student[i] / temperature).softmax(0)
        total = total + (p_t * (p_t / p_s).log()).sum()
    return temperature**2 * total / len(student)


def test_kd_matches_reference(layout, batch_factory) -> None:
    student, teacher = layout
    batch = batch_factory(student, teacher)
    terms = build_method("kd", student, teacher, 50, temperature=3.0)(batch)
    logits_s, logits_t = batch.students[0].logits, batch.teacher.logits
    assert terms.keys() == {"ce", "kd"}
    torch.testing.assert_close(terms["ce"], 0.1 * reference_ce(logits_s, batch.labels))
    torch.testing.assert_close(terms["kd"], 0.9 * reference_kd(logits_s, logits_t, 3.0))


def test_kd_uses_batchmean_kl_div(layout, batch_factory) -> None:
    student, teacher = layout
    batch = batch_factory(student, teacher)
    logits_s, logits_t = batch.students[0].logits, batch.teacher.logits
    expected = 16 * torch.nn.functional.kl_div(
        (logits_s / 4).log_softmax(1), (logits_t / 4).softmax(1), reduction="batchmean"
    )
    kd = build_method("kd", student, teacher, 50, alpha=1.0)(batch)["kd"]
    torch.testing.assert_close(kd, expected, rtol=1e-5, atol=1e-5)


def test_kd_is_zero_when_student_equals_teacher(layout, batch_factory) -> None:
    student, teacher = layout
    batch = batch_factory(student, teacher)
    batch.teacher.logits = batch.students[0].logits.detach().clone()
    assert build_method("kd", student, teacher, 50)(batch)["kd"].abs() <= 1e-7


def test_none_is_plain_cross_entropy_without_teacher(layout, batch_factory) -> None:
    student, _ = layout
    batch = batch_factory(student, None)
    terms = build_method("none", student, None, 50)(batch)
    assert terms.keys() == {"ce"}
    torch.testing.assert_close(terms["ce"], reference_ce(batch.students[0].logits, batch.labels))
