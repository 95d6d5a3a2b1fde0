"""`fitnet`: FitNets hints (docs/algorithms.md, "fitnet").

    L = γ·CE + β·MSE(r(F_s), F_t) at the hint stage,  γ = 1, β = 100

As RepDistiller (train_student.py `--distill hint`, distiller_zoo/FitNet.py, models/util.py
ConvReg; `-a 0 -b 100`) and mdistiller (CFG.FITNET, distillers/_common.py ConvReg): one
joint stage, no separate hint pre-training, and r = conv + BN + ReLU to the teacher's
width, whose conv depends on the spatial sizes (student s, teacher t):

    s = 2t: 3×3 conv, stride 2, padding 1    s = t/2: 4×4 transposed conv, stride 2, padding 1
    s ≥ t otherwise: (1 + s − t) conv, no padding (1×1 when the sizes are equal)

For 1-D signals (MNIST-1D) the same with Conv1d/BatchNorm1d; for flat (MLP) features a
Linear layer + BatchNorm1d + ReLU. A student map smaller than the teacher's, other than by
exactly 2×, is refused, as in the original.

Hint stage: RepDistiller's hint_layer = 2 indexes its feature list [stem, stage_1, …,
stage_K, pooled] (VGG: [block_0, …, block_4, pooled]), which is stage (K − 1) // 2 of
kdflow's K stage outputs for all of its models: the second of a ResNet's or WRN's three
stages, the third of VGG's five blocks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


def hint_stage(num_stages: int) -> int:
    """Return the 0-based stage whose output is the hint: RepDistiller's hint_layer = 2."""
    return (num_stages - 1) // 2


def build_regressor(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """Return RepDistiller's ConvReg (conv, BN, ReLU) mapping the student hint to the teacher's."""
    if len(student_shape) != len(teacher_shape):
        raise KdflowError(
            f"fitnet needs hint features of the same rank; student {student_shape} vs "
            f"teacher {teacher_shape}"
        )
    in_channels, out_channels = student_shape[0], teacher_shape[0]
    if len(student_shape) == 1:
        return nn.Sequential(
            nn.Linear(in_channels, out_channels), nn.BatchNorm1d(out_channels), nn.ReLU()
        )
    if len(student_shape) not in (2, 3):
        raise KdflowError(
            f"fitnet supports features of rank 1 to 3 per sample, got {student_shape}"
        )
    one_d = len(student_shape) == 2
    conv, transposed = (nn.Conv1d, nn.ConvTranspose1d) if one_d else (nn.Conv2d, nn.ConvTranspose2d)
    norm = nn.BatchNorm1d if one_d else nn.BatchNorm2d
    student_size, teacher_size = student_shape[1:], teacher_shape[1:]
    # The original decides on the height alone and sizes the valid conv by both dimensions.
    s, t = student_size[0], teacher_size[0]
    if s == 2 * t:
        layer: nn.Module = conv(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
    elif 2 * s == t:
        layer = transposed(in_channels, out_channels, kernel_size=4, stride=2, padding=1)
    elif all(a >= b for a, b in zip(student_size, teacher_size, strict=True)):
        kernel = tuple(1 + a - b for a, b in zip(student_size, teacher_size, strict=True))
        layer = conv(in_channels, out_channels, kernel_size=kernel)
    else:
        raise KdflowError(
            f"fitnet cannot regress a student hint of spatial size {student_size} onto a "
            f"teacher hint of size {teacher_size} (RepDistiller's ConvReg handles equal "
            "sizes, a larger student map, and exactly 2× smaller)"
        )
    regressor = nn.Sequential(layer, norm(out_channels), nn.ReLU())
    # The rule looks at the height only: a width it does not fit would fail at the first step.
    with torch.no_grad():
        produced = tuple(regressor.eval()(torch.zeros(2, *student_shape)).shape[1:])
    if produced != tuple(teacher_shape):
        raise KdflowError(
            f"fitnet's regressor maps the student hint {student_shape} to {produced}, "
            f"not to the teacher's {teacher_shape}"
        )
    return regressor.train()


@METHODS.register("fitnet")
class FitNet(FeatureDistillMethod):
    """Regress the student's middle-stage features onto the teacher's."""

    term = "fitnet"
    defaults = {**FEATURE_DEFAULTS, "beta": 100.0}
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
        self.student_stage = hint_stage(len(student.features))
        self.teacher_stage = hint_stage(len(teacher.features))
        self.regressor = build_regressor(
            student.features[self.student_stage], teacher.features[self.teacher_stage]
        )

    def feature_loss(self, batch: DistillBatch) -> Tensor:
        """Return the mean squared error between r(F_s) and F_t at the hint stage."""
        student_features = batch.students[0].features[self.student_stage]
        teacher_features = batch.require_teacher().features[self.teacher_stage]
        return F.mse_loss(self.regressor(student_features), teacher_features)
