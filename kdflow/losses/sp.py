"""`sp`: similarity-preserving KD (docs/algorithms.md, "sp").

    G = row-l2-normalise(A·Aᵀ), A = F flattened (B×·)
    L = γ·CE + β·‖G_s − G_t‖²_F / B²,  γ = 1, β = 3000

Applied to the last stage of each model, as RepDistiller (distiller_zoo/SP.py on feat[-2],
`-a 0 -b 3000`) and mdistiller (CFG.SP, feats[-1]); the B×B Gram matrices need no width
match.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdflow.losses import METHODS
from kdflow.losses.base import (
    FEATURE_DEFAULTS,
    LOGIT_KD_RANGES,
    WEIGHT,
    DistillBatch,
    FeatureDistillMethod,
)


def similarity_matrix(features: Tensor) -> Tensor:
    """Return the row-l2-normalised B×B Gram matrix of the flattened features."""
    flat = features.flatten(1)
    return F.normalize(flat @ flat.t(), dim=1)


@METHODS.register("sp")
class SP(FeatureDistillMethod):
    """Match the batch's pairwise-similarity pattern at the last stage."""

    term = "sp"
    defaults = {**FEATURE_DEFAULTS, "beta": 3000.0}
    ranges = {**LOGIT_KD_RANGES, "beta": WEIGHT}

    def feature_loss(self, batch: DistillBatch) -> Tensor:
        """Return ‖G_s − G_t‖²_F / B² at the last stage."""
        g_s = similarity_matrix(batch.students[0].features[-1])
        g_t = similarity_matrix(batch.require_teacher().features[-1])
        return (g_s - g_t).pow(2).sum() / g_s.shape[0] ** 2
