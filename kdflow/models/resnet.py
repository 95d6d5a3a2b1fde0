"""CIFAR-style ResNets with basic blocks, as in RepDistiller's models/resnet.py."""

from __future__ import annotations

import torch
from torch import nn

from kdflow.models import MODELS
from kdflow.models.base import ClassifierHead, KDModel
from kdflow.models.layers import LayerKit, conv_bn_relu, init_weights, layer_kit


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers plus a shortcut, then ReLU; returns the block's activation."""

    def __init__(self, kit: LayerKit, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = kit.conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = kit.batch_norm(out_channels)
        self.conv2 = kit.conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = kit.batch_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        # RepDistiller projects with a 1×1 conv (option B) whenever the shape changes.
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                kit.conv(in_channels, out_channels, 1, stride=stride, bias=False),
                kit.batch_norm(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return relu(residual branch + shortcut)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(KDModel):
    """A 3-stage CIFAR ResNet: conv stem, (depth − 2) / 6 basic blocks per stage, pool + linear."""

    stage_channels: list[int]

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        depth: int,
        stem_width: int = 16,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"ResNet depth must be 6n + 2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self._kit = layer_kit(input_shape)
        self.stem = conv_bn_relu(self._kit, input_shape[0], stem_width, 3)
        self._stage_inputs = [stem_width, *widths[:-1]]
        self._strides = [1, 2, 2]
        self.stage_channels = list(widths)
        self.stages = nn.ModuleList(
            self._make_stage(i, blocks_per_stage) for i in range(len(self.stage_channels))
        )
        self.head = ClassifierHead(widths[-1], num_classes)
        init_weights(self)

    def _make_stage(self, i: int, num_blocks: int) -> nn.Sequential:
        """Return stage i with num_blocks basic blocks (only the first changes width and stride)."""
        out_channels = self.stage_channels[i]
        blocks = [BasicBlock(self._kit, self._stage_inputs[i], out_channels, self._strides[i])]
        blocks += [
            BasicBlock(self._kit, out_channels, out_channels, 1) for _ in range(num_blocks - 1)
        ]
        return nn.Sequential(*blocks)

    def shallow_stage(self, i: int) -> nn.Module:
        """Return a fresh one-block stage i with the same widths and stride."""
        return init_weights(self._make_stage(i, num_blocks=1))


@MODELS.register("resnet8")
def resnet8(input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    """Return a ResNet-8: stage widths 16/32/64, 1 block per stage."""
    return ResNet(input_shape, num_classes, depth=8)


@MODELS.register("resnet14")
def resnet14(input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    """Return a ResNet-14: stage widths 16/32/64, 2 blocks per stage."""
    return ResNet(input_shape, num_classes, depth=14)


@MODELS.register("resnet20")
def resnet20(input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    """Return a ResNet-20: stage widths 16/32/64, 3 blocks per stage."""
    return ResNet(input_shape, num_classes, depth=20)


@MODELS.register("resnet32")
def resnet32(input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    """Return a ResNet-32: stage widths 16/32/64, 5 blocks per stage."""
    return ResNet(input_shape, num_classes, depth=32)


@MODELS.register("resnet44")
def resnet44(input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    """Return a ResNet-44: stage widths 16/32/64, 7 blocks per stage."""
    return ResNet(input_shape, num_classes, depth=44)


@MODELS.register("resnet56")
def resnet56(input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    """Return a ResNet-56: stage widths 16/32/64, 9 blocks per stage."""
    return ResNet(input_shape, num_classes, depth=56)


@MODELS.register("resnet110")
def resnet110(input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    """Return a ResNet-110: stage widths 16/32/64, 18 blocks per stage."""
    return ResNet(input_shape, num_classes, depth=110)


@MODELS.register("resnet8x4")
def resnet8x4(input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    """Return a ResNet-8×4: stem width 32, stage widths 64/128/256, 1 block per stage."""
    return ResNet(input_shape, num_classes, depth=8, stem_width=32, widths=(64, 128, 256))


@MODELS.register("resnet32x4")
def resnet32x4(input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    """Return a ResNet-32×4: stem width 32, stage widths 64/128/256, 5 blocks per stage."""
    return ResNet(input_shape, num_classes, depth=32, stem_width=32, widths=(64, 128, 256))
