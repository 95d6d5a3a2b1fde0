"""Random crop and horizontal flip of a whole training batch at once, on the batch's device.

Common CIFAR code augments each sample in a DataLoader worker (pad 4 px with black, take a
random 32×32 crop, flip with probability ½, then normalise). Here the inputs are already
normalised tensors on the training device, so the batch is padded with the normalised value
of a black pixel and every sample gets its own offsets and flip in a few tensor ops: the same
distribution, without per-sample Python work or a host round trip per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

# (inputs B×C×H×W, generator on the inputs' device) → augmented inputs of the same shape
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class CropFlip:
    """Pads by `padding` with a black pixel, crops back at a random offset, flips half the batch.

    Without `mean` and `std` the batch holds raw pixels and the padding is 0; with them it is
    already normalised and the padding is a normalised black pixel.
    """

    def __init__(
        self, padding: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
    ) -> None:
        self.padding = padding
        self.fill: list[float] | None = None
        if mean is not None and std is not None:
            # A black raw pixel (0) after normalisation: what padding means before normalising.
            self.fill = [-m / s for m, s in zip(mean, std, strict=True)]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return the augmented batch (B×C×H×W), each sample cropped and flipped independently."""
        batch, channels, height, width = x.shape
        p = self.padding
        size = (batch, channels, height + 2 * p, width + 2 * p)
        if self.fill is None:
            padded = x.new_zeros(size)
        else:
            fill = torch.tensor(self.fill, dtype=x.dtype, device=x.device)
            padded = fill.view(1, channels, 1, 1).expand(size).clone()
        padded[:, :, p : p + height, p : p + width] = x
        dy = torch.randint(0, 2 * p + 1, (batch, 1), device=x.device, generator=generator)
        dx = torch.randint(0, 2 * p + 1, (batch, 1), device=x.device, generator=generator)
        flip = torch.rand(batch, 1, device=x.device, generator=generator) < 0.5
        rows = dy + torch.arange(height, device=x.device)  # B×H
        cols = torch.arange(width, device=x.device).expand(batch, width)
        cols = torch.where(flip, width - 1 - cols, cols) + dx  # B×W, reversed where flipped
        samples = torch.arange(batch, device=x.device).view(batch, 1, 1)
        # Index as B×H×W×C (advanced indices first), then back to B×C×H×W.
        out = padded.permute(0, 2, 3, 1)[samples, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def build_augment(
    name: str, input_shape: Sequence[int], normalization: dict, raw: bool = False
) -> Augment | None:
    """Return the batch augmentation `name` ("none" gives None) for inputs of `input_shape`.

    `raw`: the batches hold raw pixels (normalised after augmenting), not normalised values.
    """
    from kdflow.errors import KdflowError

    if name == "none":
        return None
    if len(input_shape) != 3:
        raise KdflowError(
            f"data.augment {name!r} needs images (C×H×W); these inputs are {tuple(input_shape)}. "
            "Set data.augment: none"
        )
    if raw:
        return CropFlip(4)
    return CropFlip(4, normalization["mean"], normalization["std"])
