"""Student training protocols (docs/algorithms.md): full, few-shot and omitted-class (zero-shot)."""

from __future__ import annotations

import numpy as np
import torch

from kdflow.errors import KdflowError
from kdflow.train.grid import PROTOCOLS


def fewshot_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Return sorted positions of a stratified `fraction` of each class (at least one each).

    The subset depends only on the labels, the fraction and the seed, so students of
    different teachers with the same seed see the same samples.
    """
    rng = np.random.default_rng([seed, 0xF5])
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = max(1, round(fraction * len(members)))
        chosen.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(chosen))


def zeroshot_indices(labels: np.ndarray, omit: list[int]) -> np.ndarray:
    """Return positions of every sample whose class is not in `omit`."""
    return np.flatnonzero(~np.isin(labels, omit))


def protocol_indices(
    protocol: str, labels: torch.Tensor, *, fraction: float, omit: list[int], seed: int
) -> torch.Tensor:
    """Return the positions of the training samples a student may use under `protocol`."""
    y = labels.cpu().numpy()
    if protocol == "full":
        index = np.arange(len(y))
    elif protocol == "fewshot":
        index = fewshot_indices(y, fraction, seed)
    elif protocol == "zeroshot":
        index = zeroshot_indices(y, omit)
    else:
        raise KdflowError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    return torch.from_numpy(index).to(labels.device)


def check_subset(
    protocol: str,
    subset_labels: torch.Tensor,
    full_labels: torch.Tensor,
    num_classes: int,
    *,
    fraction: float,
    omit: list[int],
) -> list[str]:
    """Return the checks run on a student's training subset; raise KdflowError if one fails."""
    got = torch.bincount(subset_labels.cpu(), minlength=num_classes).tolist()
    full = torch.bincount(full_labels.cpu(), minlength=num_classes).tolist()
    checks = []
    for cls in range(num_classes):
        if protocol == "zeroshot" and cls in omit:
            checks.append(f"class {cls} absent")
            if got[cls]:
                raise KdflowError(
                    f"zeroshot subset holds {got[cls]} sample(s) of omitted class {cls}"
                )
            continue
        if protocol == "fewshot":
            target = max(1, fraction * full[cls])
            checks.append(f"class {cls} ≈ {fraction:g} of {full[cls]}")
            if abs(got[cls] - target) > 1:
                raise KdflowError(
                    f"fewshot subset has {got[cls]} sample(s) of class {cls}; "
                    f"expected {target:.1f} ± 1 ({fraction:g} of {full[cls]})"
                )
        checks.append(f"class {cls} present")
        if got[cls] == 0:
            raise KdflowError(f"{protocol} subset has no sample of class {cls}")
    return checks
