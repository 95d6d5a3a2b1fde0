"""Wide ResNets (pre-activation wide blocks), as in RepDistiller's models/wrn.py."""

from __future__ import annotations

import torch
from torch import nn

from kdflow.models import MODELS
from kdflow.models.base import ClassifierHead, KDModel
from kdflow.models.layers import LayerKit, init_weights, layer_kit


class WideBlock(nn.Module):
    """A pre-activation block: BN-ReLU-conv twice plus a shortcut; returns the un-activated sum."""

    def __init__(self, kit: LayerKit, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = kit.batch_norm(in_channels)
        self.conv1 = kit.conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = kit.batch_norm(out_channels)
        self.conv2 = kit.conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.projection: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.projection = kit.conv(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return residual branch + shortcut."""
        activated = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(activated))))
        # The reference code projects the activated input, not the raw one.
        shortcut = x if self.projection is None else self.projection(activated)
        return out + shortcut


class WideResNet(KDModel):
    """WRN-depth-width: conv stem, 3 stages of (depth − 4) / 6 wide blocks, pool + linear.

    The final BN-ReLU closes the last stage, so the head only pools and classifies.
    """

    stage_channels: list[int]

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, depth: int, width: int
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        blocks_per_stage = (depth - 4) // 6
        self._kit = layer_kit(input_shape)
        self.stem = self._kit.conv(input_shape[0], 16, 3, padding=1, bias=False)
        self.stage_channels = [16 * width, 32 * width, 64 * width]
        self._stage_inputs = [16, *self.stage_channels[:-1]]
        self._strides = [1, 2, 2]
        self.stages = nn.ModuleList(
            self._make_stage(i, blocks_per_stage) for i in range(len(self.stage_channels))
        )
        self.head = ClassifierHead(self.stage_channels[-1], num_classes)
        init_weights(self)

    def _make_stage(self, i: int, num_blocks: int) -> nn.Sequential:
        """Return stage i with num_blocks wide blocks (only the first changes width and stride)."""
        out_channels = self.stage_channels[i]
        blocks: list[nn.Module] = [
            WideBlock(self._kit, self._stage_inputs[i], out_channels, self._strides[i])
        ]
        blocks += [
            WideBlock(self._kit, out_channels, out_channels, 1) for _ in range(num_blocks - 1)
        ]
        if i == len(self.stage_channels) - 1:
            blocks += [self._kit.batch_norm(out_channels), nn.ReLU()]
        return nn.Sequential(*blocks)

    def shallow_stage(self, i: int) -> nn.Module:
        """Return a fresh one-block stage i (same widths and stride; the last keeps its BN-ReLU)."""
        return init_weights(self._make_stage(i, num_blocks=1))


@MODELS.register("wrn_16_1")
def wrn_16_1(input_shape: tuple[int, ...], num_classes: int) -> WideResNet:
    """Return a WRN-16-1: stage widths 16/32/64, 2 blocks per stage."""
    return WideResNet(input_shape, num_classes, depth=16, width=1)


@MODELS.register("wrn_16_2")
def wrn_16_2(input_shape: tuple[int, ...], num_classes: int) -> WideResNet:
    """Return a WRN-16-2: stage widths 32/64/128, 2 blocks per stage."""
    return WideResNet(input_shape, num_classes, depth=16, width=2)


@MODELS.register("wrn_40_1")
def wrn_40_1(input_shape: tuple[int, ...], num_classes: int) -> WideResNet:
    """Return a WRN-40-1: stage widths 16/32/64, 6 blocks per stage."""
    return WideResNet(input_shape, num_classes, depth=40, width=1)


@MODELS.register("wrn_40_2")
def wrn_40_2(input_shape: tuple[int, ...], num_classes: int) -> WideResNet:
    """Return a WRN-40-2: stage widths 32/64/128, 6 blocks per stage."""
    return WideResNet(input_shape, num_classes, depth=40, width=2)
