"""Synthetic CIFAR-shaped data the KD benchmarks share: uint8 images as kdflow stores them."""

from __future__ import annotations

import torch

from kdflow.data.tensors import Split

CLASSES = 100
MEAN = (129.3, 124.1, 112.4)  # CIFAR-100's per-channel pixel statistics
STD = (68.2, 65.4, 70.4)


def synthetic_cifar(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return n random uint8 images (N×3×32×32) and labels of CLASSES classes."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)
    return images, torch.randint(0, CLASSES, (n,), generator=generator)


def uint8_split(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> Split:
    """Return the images as a raw uint8 Split on `device`, normalised batch by batch."""
    stats = (torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1))
    split = Split(images, labels, torch.arange(len(labels)), stats)
    return split.to(device)
