"""The distillation-method interface (docs/algorithms.md); METHODS is in kdflow.losses.

A method receives the outputs of the student(s) and the teacher for one batch and
returns a dict of named, already-weighted loss terms; the trainer sums the values
and logs each by name, so it never needs to know which method it runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from kdflow.errors import KdflowError
from kdflow.losses import METHODS
from kdflow.losses.functional import cross_entropy, softened_kl
from kdflow.models.base import ModelOutput


# Each method declares `ranges` beside its `defaults`, one Range per key; DistillMethod checks
# every value when the method is built, so an override such as a negative weight fails at once
# in one line instead of training a nonsense objective.
@dataclass(frozen=True)
class Range:
    """An interval of allowed values, optionally restricted to whole numbers."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False  # True: the low end itself is excluded
    high_open: bool = False
    integer: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if math.isnan(value) or (self.integer and not float(value).is_integer()):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        """Return the range in words, e.g. '> 0', '≥ 0', 'in [0, 1)', 'an integer ≥ 1'."""
        low = f"{self.low:g}"
        high = f"{self.high:g}"
        if math.isinf(self.high):
            text = f"{'>' if self.low_open else '≥'} {low}"
        elif math.isinf(self.low):
            text = f"{'<' if self.high_open else '≤'} {high}"
        else:
            text = (
                f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
            )
        return f"an integer {text}" if self.integer else text


WEIGHT = Range(low=0.0)  # a loss weight: 0 switches its term off
POSITIVE = Range(low=0.0, low_open=True)  # temperatures, which divide
EPOCHS = Range(low=0.0)  # a warm-up length; 0 means none
MOMENTUM = Range(low=0.0, high=1.0, high_open=True)  # 1 would never move the memory
COUNT = Range(low=1.0, integer=True)  # sizes: negatives, embedding widths
SEED = Range(low=0.0, integer=True)


def check_ranges(method: str, values: Mapping[str, float], ranges: Mapping[str, Range]) -> None:
    """Raise KdflowError naming method, key, value and range for the first value outside it."""
    for key, value in values.items():
        allowed = ranges[key]
        if value not in allowed:
            raise KdflowError(
                f"{method}: hyper-parameter {key} = {value!r} is out of range; "
                f"allowed: {allowed.describe()}"
            )


# `kd` alone, as RepDistiller's run_cifar_distill.sh (-r 0.1 -a 0.9) and mdistiller's CFG.KD.
LOGIT_KD_DEFAULTS: dict[str, float] = {"gamma": 0.1, "alpha": 0.9, "temperature": 4.0}
# A feature method alone: CE weight 1 and no KD term (RepDistiller's `-a 0`, mdistiller's
# CE_WEIGHT 1.0). The temperature is used only when an override turns α on ("+ KD").
FEATURE_DEFAULTS: dict[str, float] = {"gamma": 1.0, "alpha": 0.0, "temperature": 4.0}
LOGIT_KD_RANGES: dict[str, Range] = {"gamma": WEIGHT, "alpha": WEIGHT, "temperature": POSITIVE}


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
    needs_train_labels: ClassVar[bool] = False  # built with every training label, by index
    num_students: ClassVar[int] = 1
    defaults: ClassVar[dict[str, float]] = {}  # every weight/temperature with its default
    ranges: ClassVar[dict[str, Range]] = {}  # the allowed values of every key of `defaults`

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A method that declares a hyper-parameter declares its range too, or fails on import.
        if set(cls.ranges) != set(cls.defaults):
            raise TypeError(
                f"{cls.__name__}: `ranges` must have exactly the keys of `defaults`; "
                f"without a range: {sorted(set(cls.defaults) - set(cls.ranges))}, "
                f"without a default: {sorted(set(cls.ranges) - set(cls.defaults))}"
            )

    def __init__(
        self,
        student: OutputShapes,
        teacher: OutputShapes | None,
        num_train: int,
        *,
        train_labels: Tensor | None = None,
        **overrides: float,
    ) -> None:
        super().__init__()
        name = self.method_name()
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            allowed = ", ".join(sorted(self.defaults)) or "none"
            raise KdflowError(
                f"unknown hyper-parameter(s) {', '.join(map(repr, unknown))} for "
                f"{name}; allowed: {allowed}"
            )
        for key, value in overrides.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise KdflowError(
                    f"hyper-parameter {key!r} of {name} must be a number, got {value!r}"
                )
        if self.needs_teacher and teacher is None:
            raise KdflowError(f"{name} needs a teacher, but none was given")
        if self.needs_train_labels:
            if train_labels is None:
                raise KdflowError(
                    f"{name} needs the training labels by index: pass train_labels "
                    "(the training split's labels, in the order of the batch indices)"
                )
            if train_labels.shape != (num_train,):
                raise KdflowError(
                    f"{name}: train_labels has shape {tuple(train_labels.shape)}, "
                    f"expected ({num_train},), one label per training sample"
                )
        self.hparams: dict[str, float] = {
            **self.defaults,
            **{k: float(v) for k, v in overrides.items()},
        }
        check_ranges(name, self.hparams, self.ranges)

    @classmethod
    def method_name(cls) -> str:
        """Return the name the method is registered under (its class name when unregistered)."""
        # The registry declares method M in kdflow.losses.M, so the module names the method.
        module = cls.__module__
        registered = module.rpartition(".")[2] if module.startswith("kdflow.losses.") else ""
        return registered if registered in METHODS else cls.__name__

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        """Return the named, already-weighted loss terms for one batch."""
        raise NotImplementedError


def logit_kd_terms(batch: DistillBatch, hp: dict[str, float]) -> dict[str, Tensor]:
    """Return {"ce": γ·CE, "kd": α·T²·KL(softmax_T(z_t) ‖ softmax_T(z_s))}; no "kd" when α = 0."""
    student = batch.students[0]
    terms = {"ce": hp["gamma"] * cross_entropy(student.logits, batch.labels)}
    # α = 0 (every feature method's default): the KD term is neither computed nor logged.
    if hp["alpha"] != 0:
        teacher = batch.require_teacher()
        terms["kd"] = hp["alpha"] * softened_kl(student.logits, teacher.logits, hp["temperature"])
    return terms


class FeatureDistillMethod(DistillMethod):
    """A feature method: γ·CE + β·L_method, plus α·KD only when an override sets α > 0."""

    needs_features = True
    term: ClassVar[str]  # the name the feature term is logged under

    def feature_loss(self, batch: DistillBatch) -> Tensor:
        """Return the unweighted feature loss L_method for the batch."""
        raise NotImplementedError

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        """Return {"ce": γ·CE, term: β·L_method}, with "kd": α·KD when α > 0."""
        terms = logit_kd_terms(batch, self.hparams)
        terms[self.term] = self.hparams["beta"] * self.feature_loss(batch)
        return terms


def build_method(
    name: str,
    student: OutputShapes,
    teacher: OutputShapes | None,
    num_train: int,
    *,
    train_labels: Tensor | None = None,
    **overrides: float,
) -> DistillMethod:
    """Return the method registered as `name`, built for these output shapes.

    `train_labels` (N, the labels of the training split in the order the batch indices
    refer to) is required by methods with `needs_train_labels` and ignored by the others,
    so a caller may always pass it.
    """
    return METHODS.get(name)(student, teacher, num_train, train_labels=train_labels, **overrides)
