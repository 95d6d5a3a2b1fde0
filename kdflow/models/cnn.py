"""A small three-stage conv net: the default student on MNIST-1D (about 8k parameters)."""

from __future__ import annotations

from torch import nn

from kdflow.models import MODELS
from kdflow.models.base import ClassifierHead, KDModel
from kdflow.models.layers import conv_bn_relu, init_weights, layer_kit, pool_plan


class SmallCNN(KDModel):
    """An identity stem, stages of one conv-BN-ReLU + 2× max pool each, global pool + linear."""

    stage_channels: list[int]

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        widths: tuple[int, ...] = (16, 32, 32),
    ) -> None:
        super().__init__()
        self._kit = layer_kit(input_shape)
        # With k=5 and the pools, the last stage sees ~36 samples, nearly all of a 40-sample
        # MNIST-1D signal; images use the usual 3×3.
        self._kernel_size = 5 if self._kit.spatial_dims == 1 else 3
        self.stem = nn.Identity()
        self.stage_channels = list(widths)
        self._stage_inputs = [input_shape[0], *widths[:-1]]
        self._pools = pool_plan(input_shape, [True] * len(widths))
        self.stages = nn.ModuleList(self.shallow_stage(i) for i in range(len(widths)))
        self.head = ClassifierHead(widths[-1], num_classes)
        init_weights(self)

    def shallow_stage(self, i: int) -> nn.Module:
        """Return a fresh conv-BN-ReLU(+pool) with stage i's shape (a stage is one such layer)."""
        layers: list[nn.Module] = [
            conv_bn_relu(
                self._kit, self._stage_inputs[i], self.stage_channels[i], self._kernel_size
            )
        ]
        if self._pools[i]:
            layers.append(self._kit.max_pool(2))
        return init_weights(nn.Sequential(*layers))


@MODELS.register("cnn3")
def cnn3(input_shape: tuple[int, ...], num_classes: int) -> SmallCNN:
    """Return the three-stage small CNN with widths 16/32/32."""
    return SmallCNN(input_shape, num_classes)
