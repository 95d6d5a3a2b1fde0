"""Distillation methods, registered by name in METHODS when this package is imported."""

from kdflow.losses import (  # noqa: F401  (imported for their @METHODS.register side effect)
    at,
    crd,
    dkd,
    dml,
    fitnet,
    kd,
    none,
    pkt,
    rkd,
    sp,
)
from kdflow.losses.base import (
    METHODS,
    DistillBatch,
    DistillMethod,
    OutputShapes,
    build_method,
)

__all__ = ["METHODS", "DistillBatch", "DistillMethod", "OutputShapes", "build_method"]
