"""VGG with batch norm, as in RepDistiller's models/vgg.py; one stage per conv group."""

from __future__ import annotations

from torch import nn

from kdflow.models import MODELS
from kdflow.models.base import ClassifierHead, KDModel
from kdflow.models.layers import conv_bn_relu, init_weights, layer_kit, pool_plan

# Conv widths of each group; a 2× max pool may follow each group (see VGG.__init__).
_GROUPS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


class VGG(KDModel):
    """VGG-BN: an identity stem, five conv groups as stages, global pool + linear."""

    stage_channels: list[int]

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, groups: list[list[int]]
    ) -> None:
        super().__init__()
        self._kit = layer_kit(input_shape)
        self.stem = nn.Identity()
        self.stage_channels = [widths[-1] for widths in groups]
        self._stage_inputs = [input_shape[0], *self.stage_channels[:-1]]
        # RepDistiller pools after the first three groups, after the fourth only for 64-pixel
        # inputs, and leaves the last to the head's global pool.
        large_input = min(input_shape[1:]) >= 64
        self._pools = pool_plan(input_shape, [True, True, True, large_input, False])
        self.stages = nn.ModuleList(self._make_stage(i, widths) for i, widths in enumerate(groups))
        self.head = ClassifierHead(self.stage_channels[-1], num_classes)
        init_weights(self)

    def _make_stage(self, i: int, widths: list[int]) -> nn.Sequential:
        """Return stage i: a 3×3 conv-BN-ReLU per width, then its max pool if it has one."""
        layers: list[nn.Module] = []
        in_channels = self._stage_inputs[i]
        for width in widths:
            layers.append(conv_bn_relu(self._kit, in_channels, width, 3))
            in_channels = width
        if self._pools[i]:
            layers.append(self._kit.max_pool(2))
        return nn.Sequential(*layers)

    def shallow_stage(self, i: int) -> nn.Module:
        """Return a fresh stage i with a single conv-BN-ReLU (and the same pool)."""
        return init_weights(self._make_stage(i, [self.stage_channels[i]]))


@MODELS.register("vgg8")
def vgg8(input_shape: tuple[int, ...], num_classes: int) -> VGG:
    """Return a VGG-8-BN: one conv per group, widths 64/128/256/512/512."""
    return VGG(input_shape, num_classes, _GROUPS["vgg8"])


@MODELS.register("vgg11")
def vgg11(input_shape: tuple[int, ...], num_classes: int) -> VGG:
    """Return a VGG-11-BN: 1/1/2/2/2 convs per group, widths 64/128/256/512/512."""
    return VGG(input_shape, num_classes, _GROUPS["vgg11"])


@MODELS.register("vgg13")
def vgg13(input_shape: tuple[int, ...], num_classes: int) -> VGG:
    """Return a VGG-13-BN: two convs per group, widths 64/128/256/512/512."""
    return VGG(input_shape, num_classes, _GROUPS["vgg13"])
