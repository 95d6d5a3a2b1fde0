"""`none`: the student alone, trained with cross-entropy (docs/algorithms.md, "none")."""

from __future__ import annotations

from torch import Tensor

from kdflow.losses import METHODS
from kdflow.losses.base import DistillBatch, DistillMethod
from kdflow.losses.functional import cross_entropy


@METHODS.register("none")
class CrossEntropyOnly(DistillMethod):
    """Plain mean cross-entropy, no teacher: the vanilla-student baseline."""

    needs_teacher = False

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        """Return {"ce": CE(z_s, y)}."""
        return {"ce": cross_entropy(batch.students[0].logits, batch.labels)}
