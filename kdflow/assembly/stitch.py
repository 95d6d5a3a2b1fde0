"""Stitch layers: adapt one network's activation width to another's at a module boundary.

A 1×1 convolution for conv features (1-D signals or 2-D images) and a linear layer for flat
features. They change only the width, so the spatial sizes on both sides must already match;
`kdflow.assembly.m2m.check_m2m_boundaries` checks that before any stitch is built.
"""

from __future__ import annotations

import torch
from torch import nn


def stitch_layer(boundary: tuple[int, ...], out_width: int) -> nn.Module:
    """Return a 1×1 conv (1-D or 2-D) or linear layer from a (C,), (C, L) or (C, H, W) boundary."""
    in_width = boundary[0]
    if len(boundary) == 1:
        return nn.Linear(in_width, out_width)
    if len(boundary) == 2:
        return nn.Conv1d(in_width, out_width, kernel_size=1)
    if len(boundary) == 3:
        return nn.Conv2d(in_width, out_width, kernel_size=1)
    raise ValueError(f"no stitch layer for a boundary of shape {boundary}")


class StitchedModule(nn.Module):
    """stitch_in → module → stitch_out: a module of one network run inside another."""

    def __init__(self, stitch_in: nn.Module, module: nn.Module, stitch_out: nn.Module) -> None:
        super().__init__()
        self.stitch_in = stitch_in
        self.module = module
        self.stitch_out = stitch_out

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Return the module's output, read from and written back to the host's widths."""
        return self.stitch_out(self.module(self.stitch_in(h)))
