"""A multilayer perceptron on the flattened input."""

from __future__ import annotations

import math

from torch import nn

from kdflow.models import MODELS
from kdflow.models.base import ClassifierHead, KDModel
from kdflow.models.layers import check_input_shape, init_weights


def linear_block(in_features: int, out_features: int) -> nn.Sequential:
    """Return Linear (no bias, BN follows), BatchNorm1d and ReLU."""
    return nn.Sequential(
        nn.Linear(in_features, out_features, bias=False),
        nn.BatchNorm1d(out_features),
        nn.ReLU(inplace=True),
    )


class MLP(KDModel):
    """A flattening stem, one Linear-BN-ReLU block per stage, then a linear head."""

    stage_channels: list[int]

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        widths: tuple[int, ...] = (256, 128, 64),
    ) -> None:
        super().__init__()
        self.stem = nn.Flatten()
        self.stage_channels = list(widths)
        self._stage_inputs = [math.prod(check_input_shape(input_shape)), *widths[:-1]]
        self.stages = nn.ModuleList(self.shallow_stage(i) for i in range(len(widths)))
        self.head = ClassifierHead(widths[-1], num_classes, pool=False)
        init_weights(self)

    def shallow_stage(self, i: int) -> nn.Module:
        """Return a fresh Linear-BN-ReLU block with stage i's widths (a stage is one block)."""
        return init_weights(linear_block(self._stage_inputs[i], self.stage_channels[i]))


@MODELS.register("mlp")
def mlp(input_shape: tuple[int, ...], num_classes: int) -> MLP:
    """Return an MLP with hidden widths 256/128/64."""
    return MLP(input_shape, num_classes)
