"""`rkd`: relational knowledge distillation (docs/algorithms.md, "rkd").

    L = γ·CE + β·(25·smoothL1(ψ_D(e_s), ψ_D(e_t)) + 50·smoothL1(ψ_A(e_s), ψ_A(e_t)))

ψ_D: pairwise distances divided by their mean over distinct pairs; ψ_A: cosines of the
triplet angles; e: the penultimate embeddings. γ = 1, β = 1, 25 and 50 (the overridable
`distance_weight` and `angle_weight`): RepDistiller's distiller_zoo/RKD.py with
`-a 0 -b 1`, mdistiller's CFG.RKD.
"""

from __future__ import annotations

import torch
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

DISTANCE_FLOOR = 1e-12  # squared distances are clamped here so sqrt keeps a finite gradient


def normalised_distances(embedding: Tensor) -> Tensor:
    """Return the B×B pairwise Euclidean distances divided by their mean over distinct pairs."""
    differences = embedding.unsqueeze(0) - embedding.unsqueeze(1)  # B×B×D
    distances = differences.pow(2).sum(dim=2).clamp_min(DISTANCE_FLOOR).sqrt()
    off_diagonal = ~torch.eye(len(embedding), dtype=torch.bool, device=embedding.device)
    distances = distances * off_diagonal
    # A batch of one has no pairs: the clamps keep 0/0 from turning into NaN.
    mean = distances.sum() / off_diagonal.sum().clamp_min(1)
    return distances / mean.clamp_min(DISTANCE_FLOOR)


def triplet_angles(embedding: Tensor) -> Tensor:
    """Return the B×B×B cosines of the angle at vertex i between samples j and k."""
    directions = F.normalize(embedding.unsqueeze(0) - embedding.unsqueeze(1), dim=2)  # B×B×D
    return directions @ directions.transpose(1, 2)


@METHODS.register("rkd")
class RKD(FeatureDistillMethod):
    """Match the distance and angle structure of the batch's embeddings."""

    term = "rkd"
    defaults = {
        **FEATURE_DEFAULTS,
        "beta": 1.0,
        "distance_weight": 25.0,
        "angle_weight": 50.0,
    }
    ranges = {
        **LOGIT_KD_RANGES,
        "beta": WEIGHT,
        "distance_weight": WEIGHT,
        "angle_weight": WEIGHT,
    }

    def feature_loss(self, batch: DistillBatch) -> Tensor:
        """Return 25·distance loss + 50·angle loss on the embeddings."""
        student = batch.students[0].embedding
        teacher = batch.require_teacher().embedding
        distance_loss = F.smooth_l1_loss(
            normalised_distances(student), normalised_distances(teacher)
        )
        angle_loss = F.smooth_l1_loss(triplet_angles(student), triplet_angles(teacher))
        hp = self.hparams
        return hp["distance_weight"] * distance_loss + hp["angle_weight"] * angle_loss
