"""CropFlip against the per-sample transforms common CIFAR code applies in a DataLoader."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdflow.errors import KdflowError
from kdflow.train.augment import CropFlip, build_augment

MEAN, STD = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)
PAD = 4


def _normalise(raw: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(-1, 1, 1)
    std = torch.tensor(STD).view(-1, 1, 1)
    return (raw - mean) / std


def _reference(raw: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One sample the usual way: pad the raw image with black, random crop, flip, normalise."""
    _, height, width = raw.shape
    padded = F.pad(raw, (PAD, PAD, PAD, PAD), value=0.0)
    top = int(torch.randint(0, 2 * PAD + 1, (1,), generator=generator))
    left = int(torch.randint(0, 2 * PAD + 1, (1,), generator=generator))
    crop = padded[:, top : top + height, left : left + width]
    if torch.rand(1, generator=generator) < 0.5:
        crop = crop.flip(2)
    return _normalise(crop)


def _candidates(raw: torch.Tensor) -> torch.Tensor:
    """Every crop/flip the reference can produce, normalised: (2·9·9)×C×H×W."""
    _, height, width = raw.shape
    padded = F.pad(raw, (PAD, PAD, PAD, PAD), value=0.0)
    crops = [
        padded[:, top : top + height, left : left + width]
        for top in range(2 * PAD + 1)
        for left in range(2 * PAD + 1)
    ]
    crops += [c.flip(2) for c in crops]
    return _normalise(torch.stack(crops))


@pytest.fixture
def raw_image() -> torch.Tensor:
    # Distinct pixel values make every crop/flip distinguishable.
    return (
        torch.randperm(3 * 8 * 8, generator=torch.Generator().manual_seed(0)).float().view(3, 8, 8)
    )


def test_every_output_is_one_of_the_reference_crops(raw_image: torch.Tensor):
    batch = _normalise(raw_image).expand(64, -1, -1, -1)

    out = CropFlip(PAD, MEAN, STD)(batch, torch.Generator().manual_seed(1))

    candidates = _candidates(raw_image)
    for sample in out:
        matches = (candidates - sample).abs().flatten(1).amax(1) < 1e-5
        assert int(matches.sum()) == 1


def test_offsets_and_flips_are_uniform(raw_image: torch.Tensor):
    n = 16_200  # 100 draws per (top, left, flip) cell on average
    batch = _normalise(raw_image).expand(n, -1, -1, -1)

    out = CropFlip(PAD, MEAN, STD)(batch, torch.Generator().manual_seed(2))

    candidates = _candidates(raw_image).flatten(1)
    cell = torch.cdist(out.flatten(1), candidates).argmin(1)
    counts = torch.bincount(cell, minlength=len(candidates)).float()
    expected = n / len(candidates)
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    # 161 degrees of freedom: the 99.9% quantile is about 222.
    assert chi_square < 222
    assert abs(float(counts[81:].sum()) / n - 0.5) < 0.02


def test_pixel_statistics_match_the_per_sample_pipeline(raw_image: torch.Tensor):
    n = 20_000
    ours = CropFlip(PAD, MEAN, STD)(
        _normalise(raw_image).expand(n, -1, -1, -1), torch.Generator().manual_seed(3)
    )
    generator = torch.Generator().manual_seed(4)
    reference = torch.stack([_reference(raw_image, generator) for _ in range(n)])

    # Standard errors of per-pixel means are about std/√n ≈ 0.01 here.
    assert torch.allclose(ours.mean(0), reference.mean(0), atol=0.06)
    assert torch.allclose(ours.std(0), reference.std(0), atol=0.06)


def test_padding_is_a_normalised_black_pixel():
    batch = torch.zeros(500, 3, 8, 8) + 7.0

    out = CropFlip(PAD, MEAN, STD)(batch, torch.Generator().manual_seed(5))

    black = _normalise(torch.zeros(3, 1, 1)).view(1, 3)
    values = out.permute(0, 2, 3, 1).reshape(-1, 3)
    border = values[(values != 7.0).all(1)]
    assert len(border) > 0
    assert torch.allclose(border, black.expand_as(border))


def test_same_generator_state_gives_the_same_batch(raw_image: torch.Tensor):
    batch = _normalise(raw_image).expand(32, -1, -1, -1)
    augment = CropFlip(PAD, MEAN, STD)

    first = augment(batch, torch.Generator().manual_seed(6))
    second = augment(batch, torch.Generator().manual_seed(6))

    assert torch.equal(first, second)
    assert first.is_contiguous(memory_format=torch.channels_last)


def test_crop_flip_on_signals_is_refused():
    with pytest.raises(KdflowError, match=r"needs images .*\(1, 40\).*data.augment: none"):
        build_augment("crop_flip", (1, 40), {"mean": [0.0], "std": [1.0]})


def test_none_builds_no_augmentation():
    assert build_augment("none", (3, 32, 32), {"mean": [0.0] * 3, "std": [1.0] * 3}) is None
