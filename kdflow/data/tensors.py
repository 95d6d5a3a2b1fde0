"""Prepared tables → tensors on the training device, after checking their hashes."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdflow.errors import KdflowError
from kdflow.io import sha256_file

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


def free_bytes(device: torch.device) -> int | None:
    """Return the bytes free on an accelerator, or None for the CPU (host memory is the limit)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
    return None


def placement(
    nbytes: int, device: torch.device, what: str, free: int | None = None, share: float = 0.5
) -> torch.device:
    """Return `device` if `nbytes` fit in `share` of its free memory, else the CPU (with a warning).

    Tensors kept on the CPU are streamed to the device batch by batch by the trainer; the
    other half of the device is left for the model, its activations and the optimiser.
    """
    free = free_bytes(device) if free is None else free
    if free is None or nbytes <= share * free:
        log.info("%s: %.1f MiB on %s", what, nbytes / 2**20, device)
        return device
    log.warning(
        "%s needs %.1f MiB, more than %.0f%% of the %.1f MiB free on %s: keeping it in host "
        "memory and streaming batches (slower)",
        what,
        nbytes / 2**20,
        share * 100,
        free / 2**20,
        device,
    )
    return torch.device("cpu")


@dataclass
class Split:
    """One split held as tensors: normalised inputs, labels and stable sample ids."""

    x: torch.Tensor  # N×C×L or N×C×H×W, float32, normalised
    y: torch.Tensor  # N, int64
    ids: torch.Tensor  # N, int64

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> Split:
        """Return the rows at `index`."""
        return Split(self.x[index], self.y[index], self.ids[index])


@dataclass
class PreparedData:
    """The prepared data set as tensors plus its meta.json."""

    train: Split
    val: Split
    test: Split
    meta: dict[str, Any]

    @property
    def num_classes(self) -> int:
        """Return the number of classes."""
        return int(self.meta["num_classes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Return the per-sample input shape (C, L) or (C, H, W)."""
        return tuple(self.meta["input_shape"])

    def split(self, name: str) -> Split:
        """Return the split called `name`."""
        return getattr(self, name)


def read_meta(folder: str | Path) -> dict[str, Any]:
    """Return meta.json of a prepared folder, or explain how to create it."""
    path = Path(folder) / "meta.json"
    if not path.is_file():
        raise KdflowError(f"{path} not found; run the prepare stage first (dvc repro prepare)")
    return json.loads(path.read_text())


def _to_split(table: Any, meta: dict[str, Any]) -> Split:
    shape = tuple(meta["input_shape"])
    x = torch.from_numpy(np.array(table["x"].to_numpy())).reshape(-1, *shape).float()
    norm = meta["normalization"]
    stat_shape = (1, shape[0]) + (1,) * (len(shape) - 1)
    mean = torch.tensor(norm["mean"], dtype=torch.float32).reshape(stat_shape)
    std = torch.tensor(norm["std"], dtype=torch.float32).reshape(stat_shape)
    x = (x - mean) / std
    y = torch.from_numpy(table["label"].to_numpy().astype(np.int64))
    ids = torch.from_numpy(table["sample_id"].to_numpy().astype(np.int64))
    return Split(x, y, ids)


def load_prepared(folder: str | Path, device: torch.device | str = "cpu") -> PreparedData:
    """Return the prepared splits as tensors on `device`; a table whose hash changed is refused."""
    import polars as pl  # here, not at the top: the trainer imports Split without polars

    folder = Path(folder)
    meta = read_meta(folder)
    splits = {}
    for name in SPLITS:
        path = folder / f"{name}.parquet"
        if not path.is_file():
            raise KdflowError(f"{path} not found; rerun the prepare stage (dvc repro prepare)")
        digest = sha256_file(path)
        if digest != meta["hashes"][name]:
            raise KdflowError(
                f"{path} changed after prepare (sha256 {digest[:12]}…, meta.json says "
                f"{meta['hashes'][name][:12]}…); rerun the prepare stage"
            )
        splits[name] = _to_split(pl.read_parquet(path), meta)
    nbytes = sum(t.nbytes for split in splits.values() for t in (split.x, split.y, split.ids))
    target = placement(nbytes, torch.device(device), "prepared data")
    splits = {
        name: Split(s.x.to(target), s.y.to(target), s.ids.to(target)) for name, s in splits.items()
    }
    return PreparedData(meta=meta, **splits)
