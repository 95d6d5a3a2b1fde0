"""m2mKD, module-to-module distillation.

Pair i, on input x, with every meta part frozen:

    h   = meta prefix(x)                          (meta stem + meta modules < i; x for i = 0)
    z_t = meta suffix(teacher module i(h))        (meta modules > i + meta head; none for K−1)
    z_s = meta suffix(stitch_out(student module i(stitch_in(h))))
    L   = (1 − α)·CE(z_s, y) + α·τ²·KL(softmax_τ(z_t) ‖ softmax_τ(z_s))

As in the official code, module 0 of each network owns that network's stem and module K−1
its head (see `kdflow.assembly.hybrid`): pair 0 starts from the input with the student's own
stem and has no stitch_in, pair K−1 ends with the student's own head and has no stitch_out,
and the teacher path of those pairs runs the teacher's stem or head likewise. A stitch sits
only where the widths differ; at equal widths it is the identity (see `m2m_pair`).

Only student module i (with the stem or head it owns) and its stitches train. The teacher
module reads and writes the meta model's activations directly, so the teacher and the meta
model must have equal shapes at every module boundary; the student's widths may differ (the
stitches adapt them) but its spatial sizes may not.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import Tensor, nn

from kdflow.assembly.hybrid import HybridModel
from kdflow.assembly.meta import BoundaryShapes, MetaModel, format_shapes
from kdflow.assembly.stitch import StitchedModule, stitch_layer
from kdflow.errors import KdflowError
from kdflow.losses.functional import cross_entropy, softened_kl
from kdflow.models.base import KDModel


def m2m_loss_terms(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float, temperature: float
) -> dict[str, Tensor]:
    """Return {"ce": (1 − α)·CE(z_s, y), "kd": α·τ²·KL(softmax_τ(z_t) ‖ softmax_τ(z_s))}."""
    return {
        "ce": (1 - alpha) * cross_entropy(student_logits, labels),
        "kd": alpha * softened_kl(student_logits, teacher_logits, temperature),
    }


def check_m2m_boundaries(
    meta: BoundaryShapes,
    teacher: BoundaryShapes,
    student: BoundaryShapes,
    *,
    target: str,
    teacher_arch: str,
    student_arch: str,
) -> None:
    """Raise KdflowError unless teacher = meta at every boundary and the student's sizes match."""
    counts = {len(meta) - 1, len(teacher) - 1, len(student) - 1}
    if len(counts) > 1:
        raise KdflowError(
            f"m2m: the teacher {teacher_arch} has {len(teacher) - 1} stage modules, the meta "
            f"model of assembly.target {target} {len(meta) - 1} and assembly.student "
            f"{student_arch} {len(student) - 1}; they must split into the same number"
        )
    if teacher != meta:
        raise KdflowError(
            f"m2m: the teacher {teacher_arch} ({format_shapes(teacher)}) and the meta model of "
            f"assembly.target {target} ({format_shapes(meta)}) differ at a module boundary; "
            "set assembly.target to a model with the teacher's stage widths and strides"
        )
    for j, (ours, theirs) in enumerate(zip(student, teacher, strict=True)):
        if len(ours) != len(theirs) or ours[1:] != theirs[1:]:
            raise KdflowError(
                f"m2m: assembly.student {student_arch} ({format_shapes(student)}) and the teacher "
                f"{teacher_arch} ({format_shapes(teacher)}) differ in spatial size at boundary "
                f"{j}; stitch layers adapt widths only, so pick a student with the teacher's "
                "strides and pooling"
            )


def m2m_pair(
    meta: MetaModel,
    student: KDModel,
    index: int,
    meta_shapes: BoundaryShapes,
    student_shapes: BoundaryShapes,
) -> HybridModel:
    """Return the student path of pair `index`: the frozen meta model around the stitched module.

    Pair 0 carries the student's stem and pair K−1 its head (copies). A stitch sits only
    where the student's module meets a meta layer of another width: the stitches are dropped
    when the modules are chained, so a module that learned through no stitch chains as it
    was trained (at equal widths an identity, like a DMA module).
    """
    last = len(student.stages) - 1
    stitch_in = (
        nn.Identity() if index == 0 else _stitch(meta_shapes[index], student_shapes[index][0])
    )
    stitch_out = (
        nn.Identity()
        if index == last
        else _stitch(student_shapes[index + 1], meta_shapes[index + 1][0])
    )
    return HybridModel(
        meta,
        index,
        StitchedModule(stitch_in, copy.deepcopy(student.stages[index]), stitch_out),
        stem=copy.deepcopy(student.stem) if index == 0 else None,
        head=copy.deepcopy(student.head) if index == last else None,
    )


def _stitch(boundary: tuple[int, ...], out_width: int) -> nn.Module:
    """Return a stitch from `boundary` to `out_width` channels, or the identity at equal widths."""
    return nn.Identity() if boundary[0] == out_width else stitch_layer(boundary, out_width)


class M2MObjective:
    """The pair loss for the trainer; the frozen teacher path rides along, not trained.

    `teacher_path` is the meta model with teacher module i swapped in
    (`incubation_model(meta, teacher, i)`), so pair 0's teacher runs the teacher's stem and
    pair K−1's the teacher's head.
    """

    def __init__(self, teacher_path: HybridModel, alpha: float, temperature: float) -> None:
        self.teacher_path = teacher_path.eval().requires_grad_(False)
        self.alpha = alpha
        self.temperature = temperature

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, index: Tensor, epoch: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the student path's logits and {"ce": …, "kd": …} for one batch."""
        pair = cast(HybridModel, model)  # fit passes the model it trains: the hybrid pair
        teacher = self.teacher_path
        with torch.no_grad():  # nothing before the module trains, nor anything on the teacher path
            h = pair.prefix(x)  # the same frozen meta layers lead to both modules
            teacher_logits = teacher.suffix(teacher.trained(h))
        student_logits = pair.suffix(pair.trained(h))
        terms = m2m_loss_terms(student_logits, teacher_logits, y, self.alpha, self.temperature)
        return student_logits, terms
