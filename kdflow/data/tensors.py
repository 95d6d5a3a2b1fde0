"""Prepared tables → tensors on the training device, after checking their hashes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdflow.errors import KdflowError
from kdflow.io import sha256_file

SPLITS = ("train", "val", "test")
TABLE_COLUMNS = ("sample_id", "label", "x")
META_KEYS = ("hashes", "num_classes", "input_shape", "normalization")
RERUN_PREPARE = "rerun the prepare stage (dvc repro prepare)"
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
        log.debug("%s: %.1f MiB on %s", what, nbytes / 2**20, device)
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
    """One split held as tensors: inputs, labels and stable sample ids.

    Image bytes stay uint8 (a quarter of float32's memory, so CIFAR fits an accelerator
    whole) and are normalised batch by batch with `stats`; other inputs are stored already
    normalised. Either way `batch` returns the same float32 model inputs.
    """

    x: torch.Tensor  # N×C×L or N×C×H×W: float32 normalised, or uint8 pixels when stats is set
    y: torch.Tensor  # N, int64
    ids: torch.Tensor  # N, int64
    stats: tuple[torch.Tensor, torch.Tensor] | None = None  # per-channel (mean, std), 1×C×1…

    def __len__(self) -> int:
        return len(self.y)

    @property
    def raw(self) -> bool:
        """Return whether `x` holds raw pixels that `normalize` still has to scale."""
        return self.stats is not None

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Return stored inputs (any rows of `x`) as float32 model inputs on x's device."""
        if self.stats is None:
            return x
        mean, std = (t.to(x.device, non_blocking=True) for t in self.stats)
        return (x.float() - mean) / std

    def batch(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Return the model inputs of the rows at `index`."""
        return self.normalize(self.x[index])

    def subset(self, index: torch.Tensor) -> Split:
        """Return the rows at `index`."""
        return Split(self.x[index], self.y[index], self.ids[index], self.stats)

    def to(self, device: torch.device) -> Split:
        """Return the split with every tensor on `device`."""
        stats = None if self.stats is None else (self.stats[0].to(device), self.stats[1].to(device))
        return Split(self.x.to(device), self.y.to(device), self.ids.to(device), stats)


def stored_rows(
    x: torch.Tensor | Split,
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Return the stored inputs of a tensor or Split, and the function that makes model inputs
    of any of their rows (the identity for a tensor of model inputs)."""
    if isinstance(x, Split):
        return x.x, x.normalize
    return x, lambda rows: rows


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
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KdflowError(f"{path} is not valid JSON ({exc}); {RERUN_PREPARE}") from None
    missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if not missing and any(s not in meta["hashes"] for s in SPLITS):
        missing = [f"hashes.{s}" for s in SPLITS if s not in meta["hashes"]]
    if missing:
        raise KdflowError(f"{path} lacks {', '.join(missing)}; {RERUN_PREPARE}")
    return meta


def _features(path: Path, table: Any, meta: dict[str, Any]) -> np.ndarray:
    """Return the feature column as an N×(input size) array (uint8 pixels stay uint8, else
    float32), refusing what prepare never writes."""
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise KdflowError(f"{path} has no column(s) {', '.join(missing)}; {RERUN_PREPARE}")
    for column in ("sample_id", "label"):
        dtype = table.schema[column]
        if not dtype.is_integer() or table[column].null_count():
            raise KdflowError(
                f"{path}: column {column!r} holds {dtype}"
                f"{' with nulls' if dtype.is_integer() else ''}; expected integers; {RERUN_PREPARE}"
            )
    inner = str(getattr(table.schema["x"], "inner", table.schema["x"]))
    if inner != meta.get("feature_dtype", inner):
        raise KdflowError(
            f"{path}: column 'x' holds {inner} but meta.json says {meta['feature_dtype']}; "
            f"{RERUN_PREPARE}"
        )
    if table.height == 0:
        raise KdflowError(f"{path} has no rows; {RERUN_PREPARE}")
    size = int(np.prod(meta["input_shape"]))
    try:
        raw = np.array(table["x"].to_numpy())
        if raw.dtype == np.uint8:
            return raw.reshape(table.height, size)
        x = raw.astype(np.float32).reshape(table.height, size)
    except (ValueError, TypeError):
        raise KdflowError(
            f"{path}: features do not have {size} values per row (input_shape "
            f"{meta['input_shape']} in meta.json); {RERUN_PREPARE}"
        ) from None
    if np.issubdtype(raw.dtype, np.integer):  # image bytes: nothing can be NaN
        return x
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        ids = table["sample_id"].to_numpy()[~finite][:5].tolist()
        raise KdflowError(
            f"{path}: {int((~finite).sum())} row(s) have NaN or infinite features (sample_id "
            f"{ids}); {RERUN_PREPARE}"
        )
    return x


def _labels(path: Path, table: Any, num_classes: int) -> np.ndarray:
    """Return the labels, refusing any outside 0..C−1 or a split that lacks a class."""
    y = table["label"].to_numpy().astype(np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise KdflowError(
            f"{path}: labels span [{y.min()}, {y.max()}] but meta.json says classes "
            f"0..{num_classes - 1}; {RERUN_PREPARE}"
        )
    # Prepare's Great Expectations suite asks every split for every class; selection and
    # the per-class figures assume it too.
    absent = np.flatnonzero(np.bincount(y, minlength=num_classes) == 0)
    if len(absent):
        raise KdflowError(f"{path}: no sample of class(es) {absent[:10].tolist()}; {RERUN_PREPARE}")
    return y


def _to_split(path: Path, table: Any, meta: dict[str, Any]) -> Split:
    shape = tuple(meta["input_shape"])
    x = torch.from_numpy(_features(path, table, meta)).reshape(-1, *shape)
    norm = meta["normalization"]
    stat_shape = (1, shape[0]) + (1,) * (len(shape) - 1)
    mean = torch.tensor(norm["mean"], dtype=torch.float32).reshape(stat_shape)
    std = torch.tensor(norm["std"], dtype=torch.float32).reshape(stat_shape)
    y = torch.from_numpy(_labels(path, table, int(meta["num_classes"])))
    ids = torch.from_numpy(table["sample_id"].to_numpy().astype(np.int64))
    if x.dtype == torch.uint8:
        return Split(x, y, ids, (mean, std))
    return Split((x - mean) / std, y, ids)


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
        # The hash matches, yet meta.json itself may be edited or forged: check the content.
        try:
            table = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise KdflowError(
                f"{path} is not a readable Parquet table ({type(exc).__name__}); {RERUN_PREPARE}"
            ) from None
        splits[name] = _to_split(path, table, meta)
    nbytes = sum(t.nbytes for split in splits.values() for t in (split.x, split.y, split.ids))
    target = placement(nbytes, torch.device(device), "prepared data")
    return PreparedData(meta=meta, **{name: s.to(target) for name, s in splits.items()})
