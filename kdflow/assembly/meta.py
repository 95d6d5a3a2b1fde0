"""The meta model of a target network and the activation shapes at its module boundaries.

The meta model keeps the target's stem and head and replaces each of the K stage modules by
`target.shallow_stage(i)`: one block with the same input and output shape. It is trained
briefly end to end and then frozen; every incubated or distilled module is
trained inside it, which is why the modules fit together afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from kdflow.errors import KdflowError
from kdflow.models.base import KDModel

BoundaryShapes = list[tuple[int, ...]]  # per-sample shapes after the stem and after each module


class MetaModel(KDModel):
    """A target's stem and head around K shallow modules of the target's module shapes."""

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head


def build_meta_model(target: KDModel) -> MetaModel:
    """Return the meta model of `target`: copies of its stem and head, fresh shallow modules."""
    name = type(target).__name__
    if not hasattr(target, "shallow_stage"):
        raise KdflowError(f"{name} has no shallow_stage(i); it cannot be assembled from modules")
    num_stages = len(target.stages)
    if num_stages < 2:
        raise KdflowError(
            f"{name} has {num_stages} stage module; model assembly needs at least 2, "
            "pick a model with several stages"
        )
    # Copies: the meta model must share no tensor with the target it was built from.
    return MetaModel(
        copy.deepcopy(target.stem),
        [target.shallow_stage(i) for i in range(num_stages)],
        copy.deepcopy(target.head),
    )


@torch.no_grad()
def boundary_shapes(model: KDModel, input_shape: tuple[int, ...]) -> BoundaryShapes:
    """Return the per-sample activation shapes after the stem and after each of the K modules."""
    was_training = model.training
    model.eval()  # a probe must not move batch-norm running statistics
    try:
        device = next(model.parameters()).device
        h = model.stem(torch.zeros(2, *input_shape, device=device))
        shapes = [tuple(h.shape[1:])]
        for stage in model.stages:
            h = stage(h)
            shapes.append(tuple(h.shape[1:]))
    finally:
        model.train(was_training)
    return shapes


def format_shapes(shapes: BoundaryShapes) -> str:
    """Return boundary shapes as `16×40 → 16×40 → 32×20` for error messages."""
    return " → ".join("×".join(map(str, shape)) for shape in shapes)


def check_module_indices(modules: Sequence[int], num_stages: int, arch: str) -> None:
    """Raise KdflowError unless `modules` lists every module index 0..K−1 of `arch` in order."""
    expected = list(range(num_stages))
    if list(modules) != expected:
        raise KdflowError(
            f"assembly.modules {list(modules)} does not match {arch}'s {num_stages} stage "
            f"modules; set assembly.modules: {expected}"
        )
