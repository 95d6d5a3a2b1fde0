"""`at`: attention transfer (docs/algorithms.md, "at").

    a(F) = l2-normalise(mean over channels of F², flattened)
    L = γ·CE + β·Σ_stages mean((a(F_s) − a(F_t))²),  γ = 1, β = 1000

RepDistiller's distiller_zoo/AT.py on feat[1:-1] (the stage outputs) with `-a 0 -b 1000`;
mdistiller's CFG.AT. Stages are paired by position over the first min(K_s, K_t) stages;
when a pair's spatial sizes differ, the larger map is adaptive-average-pooled to the
smaller, as in the original.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from kdflow.errors import KdflowError
from kdflow.losses import METHODS
from kdflow.losses.base import (
    FEATURE_DEFAULTS,
    LOGIT_KD_RANGES,
    WEIGHT,
    DistillBatch,
    FeatureDistillMethod,
    OutputShapes,
)
from kdflow.losses.functional import pool_to_common_size


def attention_map(features: Tensor) -> Tensor:
    """Return a(F): the l2-normalised channel mean of F², flattened to B×(spatial size)."""
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), dim=1)


@METHODS.register("at")
class AT(FeatureDistillMethod):
    """Match the students' spatial attention maps to the teacher's, stage by stage."""

    term = "at"
    defaults = {**FEATURE_DEFAULTS, "beta": 1000.0}
    ranges = {**LOGIT_KD_RANGES, "beta": WEIGHT}

    def __init__(
        self,
        student: OutputShapes,
        teacher: OutputShapes | None,
        num_train: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(student, teacher, num_train, **kwargs)
        assert teacher is not None  # the base class raised otherwise
        self.num_pairs = min(len(student.features), len(teacher.features))
        for stage in range(self.num_pairs):
            student_shape, teacher_shape = student.features[stage], teacher.features[stage]
            # A flat (MLP) stage has no spatial positions, so its attention map is constant.
            if len(student_shape) < 2 or len(student_shape) != len(teacher_shape):
                raise KdflowError(
                    f"at needs spatial features of the same rank at every paired stage; "
                    f"stage {stage} is {student_shape} (student) vs {teacher_shape} (teacher)"
                )

    def feature_loss(self, batch: DistillBatch) -> Tensor:
        """Return Σ over paired stages of mean((a(F_s) − a(F_t))²)."""
        student_features = batch.students[0].features
        teacher_features = batch.require_teacher().features
        total = student_features[0].new_zeros(())
        for stage in range(self.num_pairs):
            f_s, f_t = pool_to_common_size(student_features[stage], teacher_features[stage])
            total = total + (attention_map(f_s) - attention_map(f_t)).pow(2).mean()
        return total
