"""Student training: the distillation objective, the teacher-output cache and DML peer groups.

Methods come from the registry in kdflow.losses; nothing here names one.
"""

from __future__ import annotations

import torch
from torch import nn

from kdflow.data.tensors import Split, placement, stored_rows
from kdflow.losses import DistillBatch, DistillMethod
from kdflow.models.base import KDModel, ModelOutput


class PeerGroup(nn.Module):
    """Several students trained together (DML); evaluating it evaluates the first peer."""

    def __init__(self, peers: list[KDModel]) -> None:
        super().__init__()
        self.peers = nn.ModuleList(peers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the first peer's logits."""
        return self.peers[0](x)


def student_outputs(
    students: list[nn.Module], x: torch.Tensor, features: bool
) -> list[ModelOutput]:
    """Return each student's outputs; without `features` only logits are computed."""
    if features:
        return [s.forward_features(x) for s in students]
    empty = x.new_zeros(0)
    return [ModelOutput(logits=s(x), features=[], embedding=empty) for s in students]


def _teacher_forward(teacher: KDModel, x: torch.Tensor, features: bool) -> ModelOutput:
    if features:
        return teacher.forward_features(x)
    return ModelOutput(logits=teacher(x), features=[], embedding=x.new_zeros(0))


def teacher_outputs(teacher: KDModel, x: torch.Tensor, features: bool) -> ModelOutput:
    """Return the teacher's outputs without autograd history, as ordinary tensors."""
    if torch.compiler.is_compiling():  # traced into the compiled step (compile_step)
        with torch.no_grad():
            return _teacher_forward(teacher, x, features)
    with torch.inference_mode():
        out = _teacher_forward(teacher, x, features)
    # Inference tensors cannot be saved for the student's backward pass; a clone can.
    return ModelOutput(
        logits=out.logits.clone(),
        features=[f.clone() for f in out.features],
        embedding=out.embedding.clone(),
    )


class TeacherCache:
    """The teacher's outputs on every training input, computed once and reused every epoch.

    Valid only when training inputs are not randomly augmented. The cache lives on the
    teacher's device when it fits (its size is logged), else in host memory.
    """

    def __init__(
        self, teacher: KDModel, x: torch.Tensor | Split, features: bool, batch_size: int = 1024
    ):
        device = next(teacher.parameters()).device
        stored, normalize = stored_rows(x)
        parts = [
            teacher_outputs(teacher, normalize(stored[i : i + batch_size].to(device)), features)
            for i in range(0, len(stored), batch_size)
        ]
        outputs = [
            torch.cat([p.logits for p in parts]),  # N×C
            *[torch.cat([p.features[k] for p in parts]) for k in range(len(parts[0].features))],
            torch.cat([p.embedding for p in parts]) if features else parts[0].logits.new_zeros(0),
        ]
        home = placement(sum(t.nbytes for t in outputs), device, "teacher output cache")
        self.logits, *self.features, self.embedding = [t.to(home) for t in outputs]

    def lookup(self, index: torch.Tensor) -> ModelOutput:
        """Return the cached outputs of the training samples at `index`, on index's device."""
        rows = index.to(self.logits.device)

        def take(t: torch.Tensor) -> torch.Tensor:
            return t[rows].to(index.device, non_blocking=True)

        return ModelOutput(
            logits=take(self.logits),
            features=[take(f) for f in self.features],
            embedding=take(self.embedding) if self.embedding.numel() else self.embedding,
        )


class DistillObjective:
    """Student forward, teacher outputs (cached or live) and the method's named loss terms."""

    def __init__(
        self,
        method: DistillMethod,
        teacher: KDModel | None,
        *,
        total_epochs: int,
        cache: TeacherCache | None = None,
    ) -> None:
        self.method = method
        # Frozen: without requires_grad a compiled step (compile_step) gives the teacher's
        # parameters no gradients, which would otherwise cost a backward pass through it.
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.cache = cache
        self.total_epochs = total_epochs

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the evaluated student's logits and the method's loss terms for one batch."""
        students = list(model.peers) if isinstance(model, PeerGroup) else [model]
        features = self.method.needs_features
        outputs = student_outputs(students, x, features)
        teacher = None
        if self.method.needs_teacher:
            if self.cache is not None:
                teacher = self.cache.lookup(index)
            elif self.teacher is not None:
                teacher = teacher_outputs(self.teacher, x, features)
        batch = DistillBatch(
            students=outputs,
            teacher=teacher,
            labels=y,
            indices=index if self.method.needs_indices else None,
            epoch=epoch,
            total_epochs=self.total_epochs,
        )
        return outputs[0].logits, self.method(batch)


def build_objective(
    method_name: str,
    students: list[KDModel],
    teacher: KDModel | None,
    train: Split,
    *,
    epochs: int,
    cache_teacher: bool,
    settings: dict[str, float] | None = None,
) -> DistillObjective:
    """Return the objective that trains `students` on `train` by `method_name` from `teacher`.

    The chain every student shares: probe the output shapes on two training inputs, build the
    method for them (with the training labels, for methods that sample by class), cache the
    teacher's outputs when asked (only valid without random augmentation) and wrap it all.
    """
    from kdflow.losses import OutputShapes, build_method

    device = next(students[0].parameters()).device
    probe = train.batch(slice(0, 2)).to(device)  # the data may stream from host memory
    with torch.no_grad():
        student_shapes = OutputShapes.measure(students[0].eval().forward_features(probe))
        teacher_shapes = (
            OutputShapes.measure(teacher.eval().forward_features(probe))
            if teacher is not None
            else None
        )
    method = build_method(
        method_name,
        student_shapes,
        teacher_shapes,
        len(train),
        train_labels=train.y,
        **(settings or {}),
    ).to(device)
    cache = (
        TeacherCache(teacher, train, method.needs_features)
        if teacher is not None and cache_teacher
        else None
    )
    return DistillObjective(method, teacher, total_epochs=epochs, cache=cache)


def without_classes(split: Split, omit: list[int]) -> Split:
    """Return the rows of `split` whose label is not in `omit` (the zero-shot selection data)."""
    if not omit:
        return split
    keep = ~torch.isin(split.y, torch.tensor(omit, device=split.y.device))
    return split.subset(torch.nonzero(keep).squeeze(1))


def subset_hash(split: Split) -> str:
    """Return a short hash of the split's sample ids: students that share a subset share it."""
    import hashlib

    return hashlib.sha256(split.ids.cpu().numpy().tobytes()).hexdigest()[:16]
