"""`pkt`: probabilistic knowledge transfer (ALGORITHMS.md §4).

    pkt | cosine kernels K = (cos+1)/2 on embeddings, rows normalised to sum 1;
          KL(K_t ‖ K_s) averaged | 30000

"Averaged" is the mean over all B² kernel entries, as in the PKT code and
RepDistiller, for which β = 30000 is tuned (it is (1/B) times the mean row KL).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdflow.losses import METHODS
from kdflow.losses.base import LOGIT_KD_DEFAULTS, DistillBatch, FeatureDistillMethod
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
    defaults = {**LOGIT_KD_DEFAULTS, "beta": 30000.0}

    def feature_loss(self, batch: DistillBatch) -> Tensor:
        """Return KL(K_t ‖ K_s) summed per row and averaged over all B² entries."""
        kernel_s = cosine_kernel(batch.students[0].embedding)
        kernel_t = cosine_kernel(batch.require_teacher().embedding)
        return kl_divergence(kernel_t, kernel_s).sum() / kernel_s.numel()
