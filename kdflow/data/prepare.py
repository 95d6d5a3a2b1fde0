"""Turn a raw source into canonical train/val/test tables, validated, with hashes."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kdflow.config import DataParams, params_hash
from kdflow.data.sources import load_source, stratified_split
from kdflow.data.validation import SPLITS, validate_tables
from kdflow.errors import KdflowError
from kdflow.io import StagedOutputs, json_text, sha256_file, staged_outputs


def _check_raw(raw: dict[str, Any], source: str) -> None:
    expected = int(np.prod(raw["input_shape"]))
    for split in ("train", "test"):
        x, y = raw[f"x_{split}"], raw[f"y_{split}"]
        if x.ndim != 2 or x.shape[1] != expected or len(x) != len(y):
            raise KdflowError(
                f"{source}: {split} features have shape {x.shape} for {len(y)} labels; "
                f"expected N×{expected} for input shape {tuple(raw['input_shape'])}"
            )


def build_tables(raw: dict[str, Any], params: DataParams) -> dict[str, pl.DataFrame]:
    """Return train/val/test tables (sample_id, label, x) with a stratified, seeded val split."""
    _check_raw(raw, params.source)
    train_idx, val_idx = stratified_split(raw["y_train"], params.val_fraction, params.seed)
    n_train = len(raw["y_train"])
    ids_train = np.arange(n_train, dtype=np.int64)
    ids_test = np.arange(n_train, n_train + len(raw["y_test"]), dtype=np.int64)
    parts = {
        "train": (ids_train[train_idx], raw["y_train"][train_idx], raw["x_train"][train_idx]),
        "val": (ids_train[val_idx], raw["y_train"][val_idx], raw["x_train"][val_idx]),
        "test": (ids_test, raw["y_test"], raw["x_test"]),
    }
    return {
        split: pl.DataFrame(
            {
                "sample_id": pl.Series(ids, dtype=pl.Int64),
                "label": pl.Series(labels.astype(np.int64), dtype=pl.Int64),
                "x": pl.Series(np.ascontiguousarray(x)),
            }
        )
        for split, (ids, labels, x) in parts.items()
    }


def channel_stats(x: np.ndarray, input_shape: tuple[int, ...]) -> tuple[list[float], list[float]]:
    """Return per-channel mean and std of flat training features (for normalisation)."""
    channels = x.reshape(len(x), input_shape[0], -1).astype(np.float64)
    mean = channels.mean(axis=(0, 2))
    std = channels.std(axis=(0, 2))
    return mean.tolist(), np.where(std > 0, std, 1.0).tolist()


def prepare(
    params: DataParams, out_dir: str | Path, out: StagedOutputs | None = None
) -> dict[str, Any]:
    """Load the source, split, validate with Great Expectations and write tables + meta.json.

    Returns the meta dict. Nothing is written unless validation passes; with `out` the
    folder joins that staging and appears when the stage's other outputs do.
    """
    raw = load_source(params)
    tables = build_tables(raw, params)
    num_classes = int(raw["num_classes"])
    input_shape = tuple(int(d) for d in raw["input_shape"])
    feature_dtype = str(tables["train"].schema["x"].inner)
    report = validate_tables(tables, num_classes, int(np.prod(input_shape)), feature_dtype)

    mean, std = channel_stats(tables["train"]["x"].to_numpy(), input_shape)
    with contextlib.nullcontext(out) if out is not None else staged_outputs() as staged:
        tmp = staged.dir(out_dir)
        for split in SPLITS:
            tables[split].write_parquet(tmp / f"{split}.parquet", statistics=False)
        meta = {
            "source": params.source,
            "num_classes": num_classes,
            "class_names": raw.get("class_names", [str(c) for c in range(num_classes)]),
            "input_shape": list(input_shape),
            "feature_dtype": feature_dtype,
            "normalization": {"mean": mean, "std": std},
            "rows": {s: tables[s].height for s in SPLITS},
            "class_counts": {
                s: np.bincount(tables[s]["label"].to_numpy(), minlength=num_classes).tolist()
                for s in SPLITS
            },
            "hashes": {s: sha256_file(tmp / f"{s}.parquet") for s in SPLITS},
            "params_hash": params_hash(params),
            "validation": "passed",
        }
        (tmp / "meta.json").write_text(json_text(meta))
        (tmp / "validation.json").write_text(json_text(report))
    return meta
