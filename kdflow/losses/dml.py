"""`dml`: deep mutual learning of K peers, no teacher (ALGORITHMS.md §4).

    dml | mutual learning of K peers: CE_k + mean_{l≠k} KL(p_l ‖ p_k), no teacher | —

Summed over the peers k; each p_l is detached so that peer k's term trains only peer k.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdflow.losses import METHODS
from kdflow.losses.base import DistillBatch, DistillMethod
from kdflow.losses.functional import cross_entropy, kl_divergence


@METHODS.register("dml")
class DML(DistillMethod):
    """Peers trained together, each pulled towards the others' predictions."""

    needs_teacher = False
    num_students = 2
    defaults = {"gamma": 1.0, "beta": 1.0}

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        """Return {"ce": γ·Σ_k CE_k, "dml": β·Σ_k mean_{l≠k} KL(p_l ‖ p_k)}."""
        probs = [F.softmax(peer.logits, dim=1) for peer in batch.students]
        ce = sum(cross_entropy(peer.logits, batch.labels) for peer in batch.students)
        mutual = probs[0].new_zeros(())
        for k, p_k in enumerate(probs):
            others = [p_other.detach() for other, p_other in enumerate(probs) if other != k]
            pulls = sum(kl_divergence(p_other, p_k).mean() for p_other in others)
            mutual = mutual + pulls / len(others)
        return {"ce": self.hparams["gamma"] * ce, "dml": self.hparams["beta"] * mutual}
