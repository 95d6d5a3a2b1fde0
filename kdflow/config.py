"""Typed, validated params: the pydantic mirror of params.yaml, checked at every stage start."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdflow.errors import KdflowError
from kdflow.names import METHOD_NAMES, MODEL_NAMES

DATA_SOURCES = ("mnist1d", "digits", "cifar10", "cifar100", "imagefolder")


class _Section(BaseModel):
    # A typo'd key must fail loudly instead of silently falling back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DataParams(_Section):
    """Where the data comes from and how it is split."""

    source: Literal["mnist1d", "digits", "cifar10", "cifar100", "imagefolder"] = "mnist1d"
    path: str | None = None  # local folder for cifar10/cifar100/imagefolder
    seed: int = Field(0, ge=0)
    num_samples: int = Field(5000, ge=100)  # mnist1d: samples generated (80% train, 20% test)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)  # sources without an official test split
    image_size: int = Field(32, ge=4, le=512)  # imagefolder: images are resized to this square
    # Training batches only: crop_flip pads 4 px, crops back at random and flips half (images).
    augment: Literal["none", "crop_flip"] = "none"

    @model_validator(mode="after")
    def _path_for_local_sources(self) -> DataParams:
        if self.source in ("cifar10", "cifar100", "imagefolder") and not self.path:
            raise ValueError(f"data.source {self.source!r} needs data.path (a local folder)")
        return self


class TrackingParams(_Section):
    """Where MLflow runs go."""

    uri: str | None = None  # None: sqlite:///<repo>/mlflow.db; MLFLOW_TRACKING_URI overrides
    experiment: str = Field("kdflow", min_length=1)
    required: bool = (
        True  # False: an unreachable server falls back to the local store with a warning
    )


class RuntimeParams(_Section):
    """Device and determinism for every training stage."""

    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    deterministic: bool = True
    threads: int = Field(0, ge=0)  # 0: leave torch's default
    compile: bool = False  # compile each training step; on CUDA replay it as CUDA graphs


class OptimParams(_Section):
    """SGD with a multistep or cosine schedule."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    milestones: list[int] = Field(default_factory=list)  # multistep: epochs where lr *= lr_decay
    lr_decay: float = Field(0.1, gt=0, le=1)

    @model_validator(mode="after")
    def _milestones_inside_schedule(self) -> OptimParams:
        bad = [m for m in self.milestones if not 0 < m < self.epochs]
        if bad:
            raise ValueError(f"milestones {bad} must lie in (0, epochs={self.epochs})")
        return self


class TeacherParams(_Section):
    """The MLL teacher: architecture, seed and optimiser."""

    model: str = "resnet8"
    seed: int = Field(0, ge=0)
    optim: OptimParams = OptimParams(epochs=30, batch_size=128, lr=0.05)

    @model_validator(mode="after")
    def _known_model(self) -> TeacherParams:
        _check_model_name("teacher.model", self.model)
        return self


def _check_model_name(key: str, name: str) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"{key} {name!r} is not a known model; known: {', '.join(MODEL_NAMES)}")


class McmiParams(_Section):
    """The MCMI fine-tune of the MLL teacher (ALGORITHMS §3)."""

    lam: float = Field(0.5, alias="lambda", ge=0)
    centroid_split: Literal["train", "val"] = "val"
    centroid_floor: float = Field(1e-4, ge=0, lt=1)
    centroid_refresh: Literal["never", "epoch"] = "never"
    select: Literal["cmi_within_acc", "best_acc"] = "cmi_within_acc"
    max_acc_drop: float = Field(0.01, ge=0, le=1)
    optim: OptimParams = OptimParams(epochs=8, batch_size=64, lr=0.001)


class DistillParams(_Section):
    """The student grid: teachers × methods × protocols × seeds (ALGORITHMS §4–5)."""

    student: str = "cnn3"
    teachers: list[Literal["mll", "mcmi"]] = Field(default_factory=lambda: ["mll", "mcmi"])
    methods: list[str] = Field(default_factory=lambda: ["kd", "dkd", "pkt"])
    protocols: list[Literal["full", "fewshot", "zeroshot"]] = Field(
        default_factory=lambda: ["full", "fewshot", "zeroshot"]
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1])
    fewshot_fraction: float = Field(0.1, gt=0, le=1)
    omit: list[int] = Field(default_factory=lambda: [9])  # zeroshot: classes the student never sees
    cache_teacher: bool = True  # reuse teacher outputs across epochs (inputs not augmented)
    # last: the final epoch (the schedule has annealed); best_val_acc: the best validation epoch
    select: Literal["last", "best_val_acc"] = "last"
    method_params: dict[str, dict[str, float]] = Field(default_factory=dict)
    optim: OptimParams = OptimParams(epochs=30, batch_size=64, lr=0.05)

    @model_validator(mode="after")
    def _known_methods(self) -> DistillParams:
        _check_model_name("distill.student", self.student)
        for where, names in (
            ("distill.methods", self.methods),
            ("distill.method_params", list(self.method_params)),
        ):
            unknown = [n for n in names if n not in METHOD_NAMES]
            if unknown:
                raise ValueError(
                    f"unknown method(s) {', '.join(map(repr, unknown))} in {where}; "
                    f"known: {', '.join(METHOD_NAMES)}"
                )
        if len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"distill.seeds {self.seeds} must be distinct and ≥ 0")
        if not self.omit:
            raise ValueError("distill.omit needs at least one class for the zeroshot protocol")
        return self


class E2EOptimParams(_Section):
    """SGD settings of an end-to-end baseline; its epochs come from its modular counterpart."""

    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    # No multistep: its milestones would have to follow an epoch count nobody writes down.
    schedule: Literal["cosine", "constant"] = "cosine"

    def with_epochs(self, epochs: int) -> OptimParams:
        """Return these settings as the optimiser params of an `epochs`-epoch run."""
        return OptimParams(epochs=epochs, **self.model_dump())


class AssemblyParams(_Section):
    """Deep Model Assembling and m2mKD (ALGORITHMS §7–8): modules trained apart, then chained."""

    target: str = "resnet14"  # DMA target; its meta model also hosts the m2mKD pairs
    student: str = "wrn_16_1"  # m2mKD student: its modules learn from the MLL teacher's
    modules: list[int] = Field(default_factory=lambda: [0, 1, 2])  # 0..K−1 (DVC foreach)
    seed: int = Field(0, ge=0)
    alpha: float = Field(0.5, ge=0, le=1)  # m2mKD: (1 − α)·CE + α·τ²·KL
    tau: float = Field(1.0, gt=0)
    # m2mKD's preparation step: incubate each teacher module in the meta model (CE, the
    # `incubate` settings) before it teaches; 0 uses the raw teacher module (§8 as written).
    teacher_incubate_epochs: int = Field(2, ge=0)
    finetune_kd: bool = False  # m2m_assemble and m2m_e2e add KD from the MLL teacher (α, τ)
    meta: OptimParams = OptimParams(epochs=3, batch_size=128, lr=0.05)
    incubate: OptimParams = OptimParams(epochs=2, batch_size=128, lr=0.05)
    finetune: OptimParams = OptimParams(epochs=3, batch_size=128, lr=0.05)
    m2m: OptimParams = OptimParams(epochs=2, batch_size=128, lr=0.01)
    m2m_finetune: OptimParams = OptimParams(epochs=3, batch_size=128, lr=0.05)
    e2e: E2EOptimParams = E2EOptimParams(batch_size=128, lr=0.05)

    @model_validator(mode="after")
    def _known_models_and_modules(self) -> AssemblyParams:
        _check_model_name("assembly.target", self.target)
        _check_model_name("assembly.student", self.student)
        if len(self.modules) < 2 or self.modules != list(range(len(self.modules))):
            raise ValueError(
                f"assembly.modules {self.modules} must list the module indices 0, 1, …, K−1 "
                "in order, with K ≥ 2"
            )
        return self

    def dma_e2e_optim(self) -> OptimParams:
        """Return the DMA baseline's optimiser: the epochs of meta + K incubations + fine-tune."""
        epochs = self.meta.epochs + len(self.modules) * self.incubate.epochs
        return self.e2e.with_epochs(epochs + self.finetune.epochs)

    def m2m_e2e_optim(self) -> OptimParams:
        """Return the m2mKD baseline's optimiser: the epochs of K pairs + the assembled run."""
        epochs = len(self.modules) * self.m2m.epochs + self.m2m_finetune.epochs
        return self.e2e.with_epochs(epochs)


class Params(_Section):
    """Every knob of every stage; mirrors params.yaml."""

    data: DataParams = DataParams()
    tracking: TrackingParams = TrackingParams()
    runtime: RuntimeParams = RuntimeParams()
    teacher: TeacherParams = TeacherParams()
    mcmi: McmiParams = McmiParams()
    distill: DistillParams = DistillParams()
    assembly: AssemblyParams = AssemblyParams()


def _format_error(error: dict[str, Any], raw: dict[str, Any]) -> str:
    """Return one line naming the key, the bad value and what is allowed."""
    loc = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        parent_loc, key = error["loc"][:-1], str(error["loc"][-1])
        section: type[BaseModel] = Params
        for part in parent_loc:
            annotation = section.model_fields[_field_name(section, str(part))].annotation
            section = annotation  # type: ignore[assignment]
        allowed = [f.alias or n for n, f in section.model_fields.items()]
        hint = difflib.get_close_matches(key, allowed, n=1)
        suggestion = (
            f" (did you mean {'.'.join([*map(str, parent_loc), hint[0]])!r}?)" if hint else ""
        )
        return f"unknown key {loc!r}{suggestion}; allowed keys here: {', '.join(allowed)}"
    if error["type"] == "missing":
        return f"missing key {loc!r}; add it to params.yaml"
    msg = error["msg"].removeprefix("Value error, ")
    if not error["loc"] or isinstance(error["input"], dict):
        # A section-level check: its message names the offending key itself.
        return f"{loc}: {msg}" if loc else msg
    return f"{loc} = {error['input']!r} is invalid: {msg}"


def _field_name(section: type[BaseModel], key: str) -> str:
    for name, field in section.model_fields.items():
        if key in (name, field.alias):
            return name
    raise KeyError(key)


def parse_params(raw: dict[str, Any]) -> Params:
    """Return validated Params from a params dict, or raise KdflowError with one line."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise KdflowError(f"params: {_format_error(first, raw)}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Return the validated Params read from a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise KdflowError(f"params file {str(path)!r} not found; run from the repository root")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise KdflowError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise KdflowError(f"{path}: expected a mapping of sections at the top level")
    return parse_params(raw)


def params_hash(section: BaseModel | dict[str, Any]) -> str:
    """Return a short sha256 of the canonical JSON of a params section."""
    data = section.model_dump(by_alias=True) if isinstance(section, BaseModel) else section
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
