"""Layer types for 1-D signals or 2-D images, and the zoo's shared weight initialisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from kdflow.errors import KdflowError


@dataclass(frozen=True)
class LayerKit:
    """The conv, batch-norm and max-pool classes for one number of spatial dims."""

    spatial_dims: int
    conv: type[nn.Conv1d] | type[nn.Conv2d]
    batch_norm: type[nn.BatchNorm1d] | type[nn.BatchNorm2d]
    max_pool: type[nn.MaxPool1d] | type[nn.MaxPool2d]


_KITS = {
    1: LayerKit(1, nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d),
    2: LayerKit(2, nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d),
}


def check_input_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Return input_shape as a tuple, or raise KdflowError unless it is (C, L) or (C, H, W)."""
    shape = tuple(input_shape)
    if len(shape) not in (2, 3) or not all(isinstance(n, int) and n > 0 for n in shape):
        raise KdflowError(
            f"input_shape {shape} must be (channels, length) for 1-D signals or "
            "(channels, height, width) for images, with positive integers and no batch dim"
        )
    return shape


def layer_kit(input_shape: tuple[int, ...]) -> LayerKit:
    """Return the 1-D or 2-D layer classes matching input_shape (batch dim excluded)."""
    return _KITS[len(check_input_shape(input_shape)) - 1]


def conv_bn_relu(
    kit: LayerKit, in_channels: int, out_channels: int, kernel_size: int
) -> nn.Sequential:
    """Return a same-padded conv (no bias, BN follows), batch norm and ReLU."""
    conv = kit.conv(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    return nn.Sequential(conv, kit.batch_norm(out_channels), nn.ReLU(inplace=True))


def pool_plan(input_shape: tuple[int, ...], wanted: Sequence[bool]) -> list[bool]:
    """Return, per stage, whether its wanted 2× max pool still leaves every spatial dim ≥ 1."""
    size = min(input_shape[1:])
    plan = []
    for want in wanted:
        # Tiny inputs (8×8 digits, short signals) run out of resolution before the pools do.
        pool = want and size >= 2
        plan.append(pool)
        size = size // 2 if pool else size
    return plan


def init_weights(module: nn.Module) -> nn.Module:
    """Return module after He-initialising its convs and resetting its batch norms to (1, 0)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv1d | nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
    return module
