"""`fitnet`: FitNets hints (ALGORITHMS.md §4).

    fitnet | MSE(r(F_s), F_t) at one middle layer; r = conv/linear regressor to teacher width | 100

The hint layer is stage K//2 of each model. r is a 1×1 convolution (Conv1d or Conv2d,
from the feature rank) or a Linear layer for flat features; when the spatial sizes
differ, the larger feature map is adaptive-average-pooled to the smaller.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdflow.errors import KdflowError
from kdflow.losses import METHODS
from kdflow.losses.base import (
    LOGIT_KD_DEFAULTS,
    DistillBatch,
    FeatureDistillMethod,
    OutputShapes,
)
from kdflow.losses.functional import pool_to_common_size


def build_regressor(in_channels: int, out_channels: int, rank: int) -> nn.Module:
    """Return a width-adapting layer for per-sample features of the given rank (1, 2 or 3)."""
    if rank == 1:
        return nn.Linear(in_channels, out_channels)
    if rank == 2:
        return nn.Conv1d(in_channels, out_channels, kernel_size=1)
    if rank == 3:
        return nn.Conv2d(in_channels, out_channels, kernel_size=1)
    raise KdflowError(f"fitnet supports features of rank 1 to 3 per sample, got rank {rank}")


@METHODS.register("fitnet")
class FitNet(FeatureDistillMethod):
    """Regress the student's middle-stage features onto the teacher's."""

    term = "fitnet"
    defaults = {**LOGIT_KD_DEFAULTS, "beta": 100.0}

    def __init__(
        self,
        student: OutputShapes,
        teacher: OutputShapes | None,
        num_train: int,
        **overrides: float,
    ) -> None:
        super().__init__(student, teacher, num_train, **overrides)
        assert teacher is not None  # the base class raised otherwise
        self.student_stage = len(student.features) // 2
        self.teacher_stage = len(teacher.features) // 2
        student_shape = student.features[self.student_stage]
        teacher_shape = teacher.features[self.teacher_stage]
        if len(student_shape) != len(teacher_shape):
            raise KdflowError(
                f"fitnet needs hint features of the same rank; student stage "
                f"{self.student_stage} is {student_shape}, teacher stage "
                f"{self.teacher_stage} is {teacher_shape}"
            )
        self.regressor = build_regressor(student_shape[0], teacher_shape[0], len(student_shape))

    def feature_loss(self, batch: DistillBatch) -> Tensor:
        """Return the mean squared error between r(F_s) and F_t at the hint stage."""
        student_features = batch.students[0].features[self.student_stage]
        teacher_features = batch.require_teacher().features[self.teacher_stage]
        # A 1×1 regressor commutes with average pooling, so pooling first is cheaper and equal.
        student_features, teacher_features = pool_to_common_size(student_features, teacher_features)
        return F.mse_loss(self.regressor(student_features), teacher_features)
