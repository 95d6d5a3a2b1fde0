"""The distillation-method interface (ALGORITHMS.md §4, STYLE.md); METHODS is in kdflow.losses.

A method receives the outputs of the student(s) and the teacher for one batch and
returns a dict of named, already-weighted loss terms; the trainer sums the values
and logs each by name, so it never needs to know which method it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from kdflow.errors import KdflowError
from kdflow.losses import METHODS
from kdflow.losses.functional import cross_entropy, softened_kl
from kdflow.models.base import ModelOutput

# Weights of the standard CIFAR benchmark code for logit KD, alone or under a feature term.
LOGIT_KD_DEFAULTS: dict[str, float] = {"gamma": 0.1, "alpha": 0.9, "temperature": 4.0}


@dataclass(frozen=True)
class OutputShapes:
    """Per-sample shapes of a model's outputs, measured once on a dummy batch."""

    features: list[tuple[int, ...]]
    embedding_dim: int
    num_classes: int

    @classmethod
    def measure(cls, output: ModelOutput) -> OutputShapes:
        """Return the per-sample shapes of `output` (the batch dimension dropped)."""
        return cls(
            features=[tuple(f.shape[1:]) for f in output.features],
            embedding_dim=int(output.embedding.shape[1]),
            num_classes=int(output.logits.shape[1]),
        )


@dataclass
class DistillBatch:
    """Everything a method may read for one training batch."""

    students: list[ModelOutput]  # one per trainable student; students[0] is the evaluated one
    teacher: ModelOutput | None  # None when the method does not need a teacher
    labels: Tensor  # B
    indices: Tensor | None  # B positions in the training set, for methods with needs_indices
    epoch: int  # 0-based
    total_epochs: int

    def require_teacher(self) -> ModelOutput:
        """Return the teacher's outputs, or raise KdflowError when the batch has none."""
        if self.teacher is None:
            raise KdflowError("this distillation method needs teacher outputs, but none were given")
        return self.teacher


class DistillMethod(nn.Module):
    """Base class of every method: holds the merged hyper-parameters and declares its needs.

    Trainable extras (regressors, embedding heads) are submodules, so the trainer
    optimises them together with the student through `method.parameters()`.
    """

    needs_teacher: ClassVar[bool] = True
    needs_features: ClassVar[bool] = False  # uses features/embedding (else logits only)
    needs_indices: ClassVar[bool] = False
    num_students: ClassVar[int] = 1
    defaults: ClassVar[dict[str, float]] = {}  # every weight/temperature with its default

    def __init__(
        self,
        student: OutputShapes,
        teacher: OutputShapes | None,
        num_train: int,
        **overrides: float,
    ) -> None:
        super().__init__()
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            allowed = ", ".join(sorted(self.defaults)) or "none"
            raise KdflowError(
                f"unknown hyper-parameter(s) {', '.join(map(repr, unknown))} for "
                f"{type(self).__name__}; allowed: {allowed}"
            )
        for key, value in overrides.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise KdflowError(
                    f"hyper-parameter {key!r} of {type(self).__name__} must be a number, "
                    f"got {value!r}"
                )
        if self.needs_teacher and teacher is None:
            raise KdflowError(f"{type(self).__name__} needs a teacher, but none was given")
        self.hparams: dict[str, float] = {
            **self.defaults,
            **{k: float(v) for k, v in overrides.items()},
        }

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        """Return the named, already-weighted loss terms for one batch."""
        raise NotImplementedError


def logit_kd_terms(batch: DistillBatch, hp: dict[str, float]) -> dict[str, Tensor]:
    """Return {"ce": γ·CE, "kd": α·T²·KL(softmax_T(z_t) ‖ softmax_T(z_s))} (ALGORITHMS §4)."""
    student, teacher = batch.students[0], batch.require_teacher()
    return {
        "ce": hp["gamma"] * cross_entropy(student.logits, batch.labels),
        "kd": hp["alpha"] * softened_kl(student.logits, teacher.logits, hp["temperature"]),
    }


class FeatureDistillMethod(DistillMethod):
    """A feature method on top of logit KD: γ·CE + α·KD + β·L_method (ALGORITHMS.md §4)."""

    needs_features = True
    term: ClassVar[str]  # the name the feature term is logged under

    def feature_loss(self, batch: DistillBatch) -> Tensor:
        """Return the unweighted feature loss L_method for the batch."""
        raise NotImplementedError

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        """Return {"ce": γ·CE, "kd": α·KD, term: β·L_method}."""
        terms = logit_kd_terms(batch, self.hparams)
        terms[self.term] = self.hparams["beta"] * self.feature_loss(batch)
        return terms


def build_method(
    name: str,
    student: OutputShapes,
    teacher: OutputShapes | None,
    num_train: int,
    **overrides: float,
) -> DistillMethod:
    """Return the method registered as `name`, built for these output shapes."""
    return METHODS.get(name)(student, teacher, num_train, **overrides)
