"""`dkd`: decoupled knowledge distillation (docs/algorithms.md, "dkd").

With p = softmax_T and g the target class:
- b = [p_g, 1 − p_g], TCKD = T²·KL(b_t ‖ b_s);
- p̂ = softmax_T over the non-target classes (target logit minus 1000), NCKD = T²·KL(p̂_t ‖ p̂_s);
- L = γ·CE + w(epoch)·(α_dkd·TCKD + β_dkd·NCKD), γ = 1, α_dkd = 1, β_dkd = 8, T = 4,
  warm-up 20 epochs: mdistiller's CFG.DKD and configs/cifar100/dkd/res32x4_res8x4.yaml
  (other pairs override β_dkd: 2 for res56→res20 and res110→res32, 6 for the WRN and VGG
  pairs).

Warm-up: w = min((epoch + 1) / warmup, 1) with the trainer's 0-based epoch, which is
mdistiller's min(epoch / warmup, 1) with its 1-based epoch: the first epoch already gets
weight 1/warmup. `warmup` is in epochs; scale it with a shortened schedule through the
override (0: no warm-up).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdflow.losses import METHODS
from kdflow.losses.base import EPOCHS, POSITIVE, WEIGHT, DistillBatch, DistillMethod
from kdflow.losses.functional import cross_entropy, kl_divergence

# Subtracted from the target logit (after dividing by T) to drop it from the non-target softmax.
TARGET_MASK_OFFSET = 1000.0


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """Return the unweighted (TCKD, NCKD) pair, each averaged over the batch."""
    target_mask = F.one_hot(labels, student_logits.shape[1]).to(student_logits.dtype)  # B×C
    student_scaled = student_logits / temperature
    teacher_scaled = teacher_logits / temperature

    def binary(scaled: Tensor) -> Tensor:  # B×2: [p_g, 1 − p_g]
        target_prob = (F.softmax(scaled, dim=1) * target_mask).sum(dim=1, keepdim=True)
        return torch.cat([target_prob, 1.0 - target_prob], dim=1)

    tckd = kl_divergence(binary(teacher_scaled), binary(student_scaled)).mean()
    masked_teacher = F.softmax(teacher_scaled - TARGET_MASK_OFFSET * target_mask, dim=1)
    masked_student = F.softmax(student_scaled - TARGET_MASK_OFFSET * target_mask, dim=1)
    nckd = kl_divergence(masked_teacher, masked_student).mean()
    return temperature**2 * tckd, temperature**2 * nckd


@METHODS.register("dkd")
class DKD(DistillMethod):
    """Target-class and non-target-class KD terms, weighted separately and warmed up."""

    defaults = {
        "gamma": 1.0,  # CE weight: mdistiller's CFG.DKD.CE_WEIGHT
        "alpha_dkd": 1.0,
        "beta_dkd": 8.0,
        "temperature": 4.0,
        "warmup": 20.0,
    }
    ranges = {
        "gamma": WEIGHT,
        "alpha_dkd": WEIGHT,
        "beta_dkd": WEIGHT,
        "temperature": POSITIVE,
        "warmup": EPOCHS,
    }

    def warmup_weight(self, epoch: int) -> float:
        """Return w(epoch) = min((epoch + 1) / warmup, 1); 1 when warmup is 0."""
        warmup = self.hparams["warmup"]
        return 1.0 if warmup <= 0 else min((epoch + 1) / warmup, 1.0)

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        """Return {"ce": γ·CE, "tckd": w·α_dkd·TCKD, "nckd": w·β_dkd·NCKD}."""
        student, teacher = batch.students[0], batch.require_teacher()
        hp = self.hparams
        tckd, nckd = dkd_terms(student.logits, teacher.logits, batch.labels, hp["temperature"])
        weight = self.warmup_weight(batch.epoch)
        return {
            "ce": hp["gamma"] * cross_entropy(student.logits, batch.labels),
            "tckd": weight * hp["alpha_dkd"] * tckd,
            "nckd": weight * hp["beta_dkd"] * nckd,
        }
