"""`kd`: Hinton knowledge distillation (docs/algorithms.md, "kd").

    L = γ·CE(z_s, y) + α·T²·(1/B) Σ_i KL(softmax_T(z_t,i) ‖ softmax_T(z_s,i))

γ = 0.1, α = 0.9, T = 4: RepDistiller's scripts/run_cifar_distill.sh (`-r 0.1 -a 0.9`,
`--kd_T 4`) and distiller_zoo/KD.py; mdistiller's CFG.KD and distillers/KD.py.
"""

from __future__ import annotations

from torch import Tensor

from kdflow.losses import METHODS
from kdflow.losses.base import (
    LOGIT_KD_DEFAULTS,
    LOGIT_KD_RANGES,
    DistillBatch,
    DistillMethod,
    logit_kd_terms,
)


@METHODS.register("kd")
class KD(DistillMethod):
    """Cross-entropy plus temperature-softened KL to the teacher's logits."""

    defaults = dict(LOGIT_KD_DEFAULTS)
    ranges = dict(LOGIT_KD_RANGES)

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        """Return {"ce": γ·CE, "kd": α·KD}."""
        return logit_kd_terms(batch, self.hparams)
