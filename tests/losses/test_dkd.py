"""dkd against a per-sample implementation of docs/algorithms.md's DKD."""

from __future__ import annotations

import pytest
import torch

from kdflow.losses import build_method


def reference_dkd(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD) with the target class dropped exactly from the non-target softmax."""
    tckd, nckd = 0.0, 0.0
    for i, target in enumerate(labels.tolist()):
        p_t = (teacher[i] / temperature).softmax(0)
        p_s = (student[i] / temperature).softmax(0)
        b_t = torch.stack([p_t[target], 1 - p_t[target]])
        b_s = torch.stack([p_s[target], 1 - p_s[target]])
        tckd = tckd + (b_t * (b_t / b_s).log()).sum()
        keep = [c for c in range(len(p_t)) if c != target]
        q_t = (teacher[i, keep] / temperature).softmax(0)
        q_s = (student[i, keep] / temperature).softmax(0)
        nckd = nckd + (q_t * (q_t / q_s).log()).sum()
    scale = temperature**2 / len(labels)
    return scale * tckd, scale * nckd


def test_dkd_matches_reference(layout, batch_factory) -> None:
    student, teacher = layout
    batch = batch_factory(student, teacher, epoch=39)
    method = build_method("dkd", student, teacher, 50, beta_dkd=2.0, alpha_dkd=0.5)
    terms = method(batch)
    logits_s, logits_t = batch.students[0].logits, batch.teacher.logits
    tckd, nckd = reference_dkd(logits_s, logits_t, batch.labels, 4.0)
    ce = torch.nn.functional.cross_entropy(logits_s, batch.labels)
    assert terms.keys() == {"ce", "tckd", "nckd"}
    torch.testing.assert_close(terms["ce"], ce)
    torch.testing.assert_close(terms["tckd"], 0.5 * tckd, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms["nckd"], 2.0 * nckd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("epoch", "warmup", "weight"),
    [(0, 20.0, 1 / 20), (9, 20.0, 10 / 20), (19, 20.0, 1.0), (100, 20.0, 1.0), (0, 0.0, 1.0)],
)
def test_dkd_warmup_scales_both_kd_terms(
    epoch: int, warmup: float, weight: float, layout, batch_factory
) -> None:
    student, teacher = layout
    method = build_method("dkd", student, teacher, 50, warmup=warmup)
    warm = method(batch_factory(student, teacher, epoch=1000))
    terms = method(batch_factory(student, teacher, epoch=epoch))
    torch.testing.assert_close(terms["tckd"], weight * warm["tckd"])
    torch.testing.assert_close(terms["nckd"], weight * warm["nckd"])
    torch.testing.assert_close(terms["ce"], warm["ce"])


def test_dkd_is_zero_when_student_equals_teacher(layout, batch_factory) -> None:
    student, teacher = layout
    batch = batch_factory(student, teacher, epoch=30)
    batch.teacher.logits = batch.students[0].logits.detach().clone()
    terms = build_method("dkd", student, teacher, 50)(batch)
    assert terms["tckd"].abs() <= 1e-7 and terms["nckd"].abs() <= 1e-7
