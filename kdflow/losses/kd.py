"""`kd`: Hinton knowledge distillation (ALGORITHMS.md §4).

    kd | T² · (1/B) Σ_i KL(softmax_T(z_t,i) ‖ softmax_T(z_s,i)) | (α term)

Total loss γ·CE + α·KD with γ = 0.1, α = 0.9, T = 4.
"""

from __future__ import annotations

from torch import Tensor

from kdflow.losses import METHODS
from kdflow.losses.base import (
    LOGIT_KD_DEFAULTS,
    DistillBatch,
    DistillMethod,
    logit_kd_terms,
)


@METHODS.register("kd")
class KD(DistillMethod):
    """Cross-entropy plus temperature-softened KL to the teacher's logits."""

    defaults = dict(LOGIT_KD_DEFAULTS)

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        """Return {"ce": γ·CE, "kd": α·KD}."""
        return logit_kd_terms(batch, self.hparams)
