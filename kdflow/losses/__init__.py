"""Distillation methods by name; importing this package imports neither torch nor any method.

METHODS declares which module defines each method, so params validate without torch and
`build_method(name, …)` imports only kdflow.losses.<name> (and what that module imports):
a student stage's import closure, and so its DVC deps, hold only the method it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kdflow.registry import Registry

if TYPE_CHECKING:
    from kdflow.losses.base import DistillBatch, DistillMethod, OutputShapes, build_method

# Method M lives in kdflow/losses/M.py: dvc.yaml gives a student of M that file as its dep.
# kdflow/losses/mcmi.py is the MCMI teacher objective, not a distillation method.
METHODS: Registry[type[DistillMethod]] = Registry(
    "distillation method",
    modules={
        name: f"kdflow.losses.{name}"
        for name in ("none", "kd", "dkd", "fitnet", "at", "sp", "rkd", "pkt", "crd", "dml")
    },
)


def method_label(name: str, overrides: Mapping[str, Any]) -> str:
    """Return the name a report prints for method `name` under these params overrides.

    Every method but `kd` has no logit-KD term by default (α = 0, or no α at all), so an
    override α > 0 makes it the "method + KD" variant, labelled "<name> + KD"; otherwise the
    label is the name ("pkt" for PKT with its published weights, "kd" for KD).
    """
    alpha = overrides.get("alpha", 0.0)
    kd_on = isinstance(alpha, int | float) and not isinstance(alpha, bool) and alpha > 0
    return f"{name} + KD" if kd_on and name != "kd" else name


_FROM_BASE = ("DistillBatch", "DistillMethod", "OutputShapes", "build_method")


def __getattr__(name: str) -> Any:
    # Loaded on first use, so `import kdflow.losses` stays free of torch.
    if name in _FROM_BASE:
        return getattr(importlib.import_module("kdflow.losses.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METHODS",
    "DistillBatch",
    "DistillMethod",
    "OutputShapes",
    "build_method",
    "method_label",
]
