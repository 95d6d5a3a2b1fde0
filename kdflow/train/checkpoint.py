"""Model files: weights plus the metadata that says what they apply to, loaded weights-only."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdflow.errors import KdflowError
from kdflow.io import StagedOutputs, staged_outputs
from kdflow.models import build_model
from kdflow.models.base import KDModel

META_KEYS = ("arch", "input_shape", "num_classes", "data_hash")


def data_fingerprint(meta: dict[str, Any]) -> str:
    """Return the prepared data's identity: the train/val/test table hashes joined."""
    return "-".join(meta["hashes"][s][:16] for s in ("train", "val", "test"))


def data_expectations(meta: dict[str, Any]) -> dict[str, Any]:
    """Return the model metadata a checkpoint must carry to apply to this prepared data."""
    return {
        "data_hash": data_fingerprint(meta),
        "num_classes": int(meta["num_classes"]),
        "input_shape": list(meta["input_shape"]),
    }


def torch_bytes(obj: Any) -> bytes:
    """Return `obj` serialised by torch.save, the same bytes for the same object every time."""
    # Saved to a path, the zip archive's root folder is the file's name (a random temp name
    # here); saved to a buffer it is always "archive". A buffer also lets the write itself
    # raise OSError with its errno, which torch's own file writer loses.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_model(
    path: str | Path,
    model: nn.Module,
    meta: dict[str, Any],
    out: StagedOutputs | None = None,
) -> None:
    """Write the model's weights with `meta` (arch, input_shape, num_classes…) atomically.

    With `out` the file joins that staging and appears when the stage's other outputs do.
    """
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"model metadata lacks {missing}")
    data = torch_bytes({"meta": meta, "state_dict": model.state_dict()})
    if out is None:
        with staged_outputs() as own:
            own.path(path).write_bytes(data)
    else:
        out.path(path).write_bytes(data)


def read_model_file(
    path: str | Path,
    *,
    expect: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state_dict, meta) of a model file; metadata must match `expect` where given."""
    path = Path(path)
    if not path.is_file():
        raise KdflowError(f"model file {path} not found; run the stage that trains it first")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        meta, state = blob["meta"], blob["state_dict"]
    except Exception as exc:
        raise KdflowError(
            f"{path} is not a readable kdflow model file ({type(exc).__name__}); "
            "rerun the stage that wrote it"
        ) from None
    for key, wanted in (expect or {}).items():
        found = meta.get(key)
        if isinstance(found, list | tuple):
            found, wanted = list(found), list(wanted)
        if found != wanted:
            raise KdflowError(
                f"{path} was trained for {key}={found!r} but this data has {key}={wanted!r}; "
                "rerun the stage that trains it on the current data"
            )
    return state, meta


def load_weights(
    model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, arch: str
) -> None:
    """Load `state` into `model`, or raise KdflowError saying the file does not fit `arch`."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        # load_state_dict lists every key on its own line; the error stays one line.
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 160 else detail[:160] + "…"
        raise KdflowError(
            f"{path}: weights do not fit {arch} ({detail}); rerun the stage that wrote it"
        ) from None


def load_model(
    path: str | Path,
    *,
    expect: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[KDModel, dict[str, Any]]:
    """Return (model, meta) from a model file; metadata must match `expect` where given."""
    state, meta = read_model_file(path, expect=expect, device=device)
    model = build_model(meta["arch"], tuple(meta["input_shape"]), int(meta["num_classes"]))
    load_weights(model, state, path, meta["arch"])
    return model.to(device), meta
