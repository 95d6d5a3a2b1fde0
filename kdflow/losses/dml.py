"""`dml`: deep mutual learning of K peers, no teacher (docs/algorithms.md, "dml").

    L = Σ_k [γ·CE_k + β·mean_{l≠k} KL(p_l ‖ p_k)],  p = softmax(z) (temperature 1)

γ = β = 1 as in the DML paper and its code (YingZhangDUT/Deep-Mutual-Learning,
train_models.py, which sums over l ≠ k: the same as the mean for the two peers kdflow
trains). Each p_l is detached so that peer k's term trains only peer k; the peers are
updated together from one forward pass, where the original code updates them in turn.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdflow.losses import METHODS
from kdflow.losses.base import WEIGHT, DistillBatch, DistillMethod
from kdflow.losses.functional import cross_entropy, kl_divergence


@METHODS.register("dml")
class DML(DistillMethod):
    """Peers trained together, each pulled towards the others' predictions."""

    needs_teacher = False
    num_students = 2
    defaults = {"gamma": 1.0, "beta": 1.0}
    ranges = {"gamma": WEIGHT, "beta": WEIGHT}

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
