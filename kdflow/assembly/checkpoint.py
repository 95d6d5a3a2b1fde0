"""Meta-model and per-module checkpoints: what they record and how they are rebuilt.

The four final models (assembled and end to end) are plain zoo models saved with
`kdflow.train.checkpoint.save_model`. The meta model and the hybrids the module stages
train are not zoo architectures, so their metadata carries an `assembly` record (role,
module index, m2mKD student, the parts that trained) from which `load_assembly_model`
rebuilds the structure: `arch` is always the assembly target whose meta model they are
built on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from kdflow.assembly.hybrid import HybridModel, incubation_model
from kdflow.assembly.m2m import m2m_pair
from kdflow.assembly.meta import MetaModel, boundary_shapes, build_meta_model
from kdflow.errors import KdflowError
from kdflow.models import build_model
from kdflow.models.base import KDModel
from kdflow.train.checkpoint import load_weights, read_model_file

Role = Literal["meta", "incubate", "m2m"]


def assembly_model_meta(
    role: Role, *, model: KDModel, module: int | None = None, student: str | None = None
) -> dict[str, Any]:
    """Return the extra checkpoint metadata that says how to rebuild a meta or module model.

    `trains` lists the state-dict prefixes of the parts that trained (module 0's include the
    stem, module K−1's the head): a checkpoint written under another rule is refused on load.
    """
    return {
        "assembly": {
            "role": role,
            "module": module,
            "student": student,
            "trains": _trained_names(model),
        }
    }


def _trained_names(model: KDModel) -> list[str]:
    """Return the state-dict prefixes of the parts of `model` that train (all of a meta model)."""
    return (
        model.trained_names() if isinstance(model, HybridModel) else ["stem.", "stages.", "head."]
    )


def _rebuild(meta: dict[str, Any]) -> KDModel:
    """Return a freshly initialised model with the structure the metadata describes."""
    input_shape, num_classes = tuple(meta["input_shape"]), int(meta["num_classes"])
    info = meta["assembly"]
    target = build_model(meta["arch"], input_shape, num_classes)
    meta_model = build_meta_model(target)
    if info["role"] == "meta":
        return meta_model
    if info["role"] == "incubate":
        return incubation_model(meta_model, target, info["module"])
    if info["role"] != "m2m":
        raise KdflowError(f"unknown assembly role {info['role']!r}")
    student = build_model(info["student"], input_shape, num_classes)
    return m2m_pair(
        meta_model,
        student,
        info["module"],
        boundary_shapes(meta_model, input_shape),
        boundary_shapes(student, input_shape),
    )


def load_assembly_model(
    path: str | Path,
    *,
    role: Role,
    target: str,
    expect: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[KDModel, dict[str, Any]]:
    """Return (model, meta) of a meta or module checkpoint of assembly target `target`."""
    state, meta = read_model_file(path, expect=expect, device=device)
    found = (meta.get("assembly") or {}).get("role")
    if found != role:
        raise KdflowError(
            f"{path} holds role {found!r}, not the {role!r} checkpoint expected; rerun its stage"
        )
    if meta["arch"] != target:
        raise KdflowError(
            f"{path} was built for assembly.target {meta['arch']!r}, not {target!r}; "
            "rerun its stage with the current params"
        )
    model = _rebuild(meta)
    expected = _trained_names(model)
    if meta["assembly"].get("trains") != expected:
        raise KdflowError(
            f"{path} trained {meta['assembly'].get('trains')}, not the {expected} this code "
            "trains; rerun its stage"
        )
    load_weights(model, state, path, f"the {role} model of {target}")
    return model.to(device), meta


def check_same_meta(hybrid: HybridModel, meta_model: MetaModel, path: str | Path) -> None:
    """Raise KdflowError unless the hybrid's frozen parts are bit-identical to `meta_model`'s."""
    mine = hybrid.state_dict()
    trained = tuple(hybrid.trained_names())
    for name, tensor in meta_model.state_dict().items():
        if not name.startswith(trained) and not torch.equal(mine[name], tensor):
            raise KdflowError(
                f"{path} was trained inside another meta model than the current one ({name} "
                "differs); rerun its stage"
            )
