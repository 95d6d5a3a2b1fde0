"""`pkt`: probabilistic knowledge transfer (docs/algorithms.md, "pkt").

    K = (cos + 1)/2 of the embeddings, rows normalised to sum 1
    L = γ·CE + β·(1/B²) Σ_ij K_t,ij·log(K_t,ij / K_s,ij),  γ = 1, β = 30000

The mean over all B² kernel entries, as in the PKT authors' code and RepDistiller's
distiller_zoo/PKT.py, for which β = 30000 is tuned (`-a 0 -b 30000`; mdistiller's CFG.PKT).
The original adds 1e-7 inside the log and to the norms; kdflow clamps at 1e-12 instead.
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
from kdflow.losses.functional import kl_divergence


def cosine_kernel(embedding: Tensor) -> Tensor:
    """Return the B×B kernel (cos + 1)/2 of the embeddings, each row normalised to sum 1."""
    unit = F.normalize(embedding, dim=1)
    kernel = (unit @ unit.t() + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


@METHODS.register("pkt")
class PKT(FeatureDistillMethod):
    """Match the student's embedding-similarity distribution to the teacher's."""

    term = "pkt"
    defaults = {**FEATURE_DEFAULTS, "beta": 30000.0}
    ranges = {**LOGIT_KD_RANGES, "beta": WEIGHT}

    def feature_loss(self, batch: DistillBatch) -> Tensor:
        """Return KL(K_t ‖ K_s) summed per row and averaged over all B² entries."""
        kernel_s = cosine_kernel(batch.students[0].embedding)
        kernel_t = cosine_kernel(batch.require_teacher().embedding)
        return kl_divergence(kernel_t, kernel_s).sum() / kernel_s.numel()
