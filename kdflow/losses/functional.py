"""Small loss formulas shared by the distillation methods (docs/algorithms.md)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

PROB_FLOOR = 1e-12  # probabilities are clamped here before a log, so no log(0) = −inf


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Return the mean cross-entropy of B×C logits against B labels."""
    return F.cross_entropy(logits, labels)


def kl_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Return KL(p‖q) along the last dimension, one value per row, with clamped logs."""
    # A zero entry of p contributes exactly 0 because it multiplies a finite clamped log.
    return (p * (p.clamp_min(PROB_FLOOR).log() - q.clamp_min(PROB_FLOOR).log())).sum(dim=-1)


def softened_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Return T² · mean_i KL(softmax_T(z_t,i) ‖ softmax_T(z_s,i)), the Hinton KD term."""
    teacher_probs = F.softmax(teacher_logits / temperature, dim=1)
    student_probs = F.softmax(student_logits / temperature, dim=1)
    return temperature**2 * kl_divergence(teacher_probs, student_probs).mean()


def pool_to_common_size(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Return a and b adaptive-average-pooled to the smaller size in every spatial dimension."""
    if a.shape[2:] == b.shape[2:]:
        return a, b
    size = tuple(min(x, y) for x, y in zip(a.shape[2:], b.shape[2:], strict=True))
    pool = F.adaptive_avg_pool1d if a.dim() == 3 else F.adaptive_avg_pool2d
    # Pooling to a tensor's own size is the identity, so only the larger one changes.
    return pool(a, size), pool(b, size)
