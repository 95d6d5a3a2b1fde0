"""Typed, validated params: the pydantic mirror of params.yaml, checked at every stage start."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdflow.data import LOCAL_SOURCES, SOURCES
from kdflow.errors import KdflowError
from kdflow.losses import METHODS
from kdflow.models import MODELS
from kdflow.train.grid import PROTOCOLS, TEACHERS


def _one_of(kind: str, names: Sequence[str]) -> AfterValidator:
    """Return a validator that accepts only `names` and lists them for any other value."""

    def check(value: str) -> str:
        if value not in names:
            raise ValueError(f"not a known {kind}; known: {', '.join(names)}")
        return value

    return AfterValidator(check)


SourceName = Annotated[str, _one_of("data source", SOURCES.names())]
TeacherKind = Annotated[str, _one_of("teacher", TEACHERS)]
ProtocolName = Annotated[str, _one_of("protocol", PROTOCOLS)]


class ParamsTrace:
    """The dotted params keys a process read, recorded while `trace_params()` is active.

    DVC reruns a stage exactly when a key it declares changes, so a stage must declare every
    key it reads and no other; tests run the stages with a trace and compare it to dvc.yaml.
    """

    def __init__(self) -> None:
        self.paths: dict[int, str] = {}  # id(section) → its dotted path in params.yaml
        self.keys: set[str] = set()

    def attach(self, section: BaseModel, path: str = "") -> None:
        """Remember the dotted path of `section` and of every section nested in it."""
        self.paths[id(section)] = path
        for name, field in type(section).model_fields.items():
            value = object.__getattribute__(section, name)
            if isinstance(value, BaseModel):
                key = field.alias or name
                self.attach(value, f"{path}.{key}" if path else key)

    def record(self, section: BaseModel, key: str) -> None:
        """Record that `key` (relative to `section`) was read, if the section is traced."""
        path = self.paths.get(id(section))
        if path is not None:
            # The whole params file read at once (its root dumped) is recorded as "*".
            self.keys.add(".".join(part for part in (path, key) if part) or "*")


_TRACE: ParamsTrace | None = None


@contextlib.contextmanager
def trace_params() -> Iterator[ParamsTrace]:
    """Yield a ParamsTrace that records every key read from params loaded inside the block."""
    global _TRACE
    previous, _TRACE = _TRACE, ParamsTrace()
    try:
        yield _TRACE
    finally:
        _TRACE = previous


class _Section(BaseModel):
    # A typo'd key must fail loudly instead of silently falling back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if _TRACE is not None and not name.startswith("_"):
            fields = type(self).model_fields
            # A nested section is not a read by itself; what is read from it is.
            if name in fields and not isinstance(value, BaseModel):
                _TRACE.record(self, fields[name].alias or name)
        return value

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """Return the section as a dict (a read of the whole section when traced)."""
        if _TRACE is not None and id(self) in _TRACE.paths:
            fields = type(self).model_fields
            names = set(kwargs.get("include") or fields) - set(kwargs.get("exclude") or ())
            if names == set(fields):
                _TRACE.record(self, "")
            else:
                for name in sorted(names):
                    _TRACE.record(self, fields[name].alias or name)
        return super().model_dump(**kwargs)


class DataParams(_Section):
    """Where the data comes from and how it is split."""

    source: SourceName = "mnist1d"
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
        if self.source in LOCAL_SOURCES and not self.path:
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
    if name not in MODELS:
        known = ", ".join(MODELS.names())
        raise ValueError(f"{key} {name!r} is not a known model; known: {known}")


class McmiParams(_Section):
    """The MCMI fine-tune of the MLL teacher (docs/algorithms.md, MCMI)."""

    lam: float = Field(0.5, alias="lambda", ge=0)
    # Where the class centroids Q come from: the training split (the paper's way), or a
    # stratified holdout_fraction of it that the fine-tune then leaves out. Never the
    # validation split: it selects the checkpoint, so its labels stay out of the objective.
    centroid_split: Literal["train", "holdout"] = "train"
    holdout_fraction: float = Field(0.1, gt=0, lt=1)
    centroid_floor: float = Field(1e-4, ge=0, lt=1)
    centroid_refresh: Literal["never", "epoch"] = "never"
    select: Literal["cmi_within_acc", "best_acc"] = "cmi_within_acc"
    max_acc_drop: float = Field(0.01, ge=0, le=1)
    optim: OptimParams = OptimParams(epochs=8, batch_size=64, lr=0.001)


class FullProtocolParams(_Section):
    """The full protocol has no knobs; its (empty) section is what its students declare."""


class FewshotProtocolParams(_Section):
    """Few-shot: the stratified fraction of the training split each student sees."""

    fraction: float = Field(0.1, gt=0, le=1)


class ZeroshotProtocolParams(_Section):
    """Omitted classes: removed from the student's training and selection data."""

    omit: list[int] = Field(default_factory=lambda: [9])

    @model_validator(mode="after")
    def _some_class_omitted(self) -> ZeroshotProtocolParams:
        if not self.omit:
            raise ValueError("needs at least one class to omit for the zeroshot protocol")
        if len(set(self.omit)) != len(self.omit) or any(c < 0 for c in self.omit):
            raise ValueError(f"omit {self.omit} must list distinct class indices ≥ 0")
        return self


class ProtocolParams(_Section):
    """Each protocol's knobs in a section of its own, so a student declares only its own."""

    full: FullProtocolParams = FullProtocolParams()
    fewshot: FewshotProtocolParams = FewshotProtocolParams()
    zeroshot: ZeroshotProtocolParams = ZeroshotProtocolParams()


def _default_method_params() -> dict[str, dict[str, float]]:
    # One entry per method: a student stage declares `distill.method_params.<its method>`,
    # and DVC refuses a declared key that params.yaml lacks. DKD's 20-epoch warm-up of 240
    # is scaled to the default 10 epochs.
    entries: dict[str, dict[str, float]] = {m: {} for m in METHODS.names() if m != "none"}
    entries["dkd"] = {"warmup": 1}
    return entries


class DistillParams(_Section):
    """The student grid: teachers × methods × protocols × seeds (docs/algorithms.md)."""

    student: str = "cnn3"
    teachers: list[TeacherKind] = Field(default_factory=lambda: list(TEACHERS))
    methods: list[str] = Field(default_factory=lambda: ["kd", "dkd"])
    protocols: list[ProtocolName] = Field(default_factory=lambda: list(PROTOCOLS))
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    protocol_params: ProtocolParams = ProtocolParams()
    cache_teacher: bool = True  # reuse teacher outputs across epochs (inputs not augmented)
    # last: the final epoch (the schedule has annealed); best_val_acc: the best validation epoch
    select: Literal["last", "best_val_acc"] = "last"
    method_params: dict[str, dict[str, float]] = Field(default_factory=_default_method_params)
    optim: OptimParams = OptimParams(epochs=10, batch_size=64, lr=0.05)

    def method_settings(self, method: str) -> dict[str, float]:
        """Return the overrides params.yaml gives `method` ({} keeps its defaults)."""
        if _TRACE is not None:
            _TRACE.record(self, f"method_params.{method}")
        return dict(object.__getattribute__(self, "method_params").get(method, {}))

    @property
    def fewshot_fraction(self) -> float:
        """Return the few-shot protocol's training fraction."""
        return self.protocol_params.fewshot.fraction

    @property
    def omit(self) -> list[int]:
        """Return the classes the zeroshot protocol omits."""
        return self.protocol_params.zeroshot.omit

    @model_validator(mode="after")
    def _known_methods(self) -> DistillParams:
        _check_model_name("distill.student", self.student)
        for where, names in (
            ("distill.methods", self.methods),
            ("distill.method_params", list(self.method_params)),
        ):
            unknown = [n for n in names if n not in METHODS]
            if unknown:
                raise ValueError(
                    f"unknown method(s) {', '.join(map(repr, unknown))} in {where}; "
                    f"known: {', '.join(METHODS.names())}"
                )
        missing = [m for m in self.methods if m not in self.method_params]
        if missing:
            raise ValueError(
                f"distill.method_params has no entry for {', '.join(map(repr, missing))}; "
                f"add `{missing[0]}: {{}}` (an empty entry keeps the method's defaults)"
            )
        if len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"distill.seeds {self.seeds} must be distinct and ≥ 0")
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
    """Deep Model Assembling and m2mKD (docs/algorithms.md): modules trained apart, then chained."""

    target: str = "resnet14"  # DMA target; its meta model also hosts the m2mKD pairs
    student: str = "wrn_16_1"  # m2mKD student: its modules learn from the MLL teacher's
    modules: list[int] = Field(default_factory=lambda: [0, 1, 2])  # 0..K−1 (DVC matrix)
    # Every assembly stage runs once per seed (DVC matrix); a stage reads only its own --seed.
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
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
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(
                f"assembly.seeds {self.seeds} must list one or more distinct seeds ≥ 0"
            )
        return self

    def dma_epoch_budget(self) -> int:
        """Return DMA's total epochs: the meta model, K incubations and the fine-tune."""
        return self.meta.epochs + len(self.modules) * self.incubate.epochs + self.finetune.epochs

    def m2m_epoch_budget(self) -> int:
        """Return m2mKD's total epochs: K module pairs and the assembled fine-tune."""
        return len(self.modules) * self.m2m.epochs + self.m2m_finetune.epochs

    def dma_e2e_optim(self) -> OptimParams:
        """Return the DMA baseline's optimiser: e2e settings for DMA's epoch budget."""
        return self.e2e.with_epochs(self.dma_epoch_budget())

    def m2m_e2e_optim(self) -> OptimParams:
        """Return the m2mKD baseline's optimiser: e2e settings for m2mKD's epoch budget."""
        return self.e2e.with_epochs(self.m2m_epoch_budget())


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key written twice in one mapping, as DVC does."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                mark = key_node.start_mark
                raise KdflowError(
                    f"line {mark.line + 1}, column {mark.column + 1}: key {key!r} is written "
                    f"twice (first on line {seen[key]}); DVC refuses such a file: keep one"
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> KdflowError:
    """Return the one-line error of a YAML parse failure, with its line and column."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return KdflowError(f"{path}: not valid YAML{where}: {problem}")


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Return params.yaml's raw sections: every section present, no key written twice."""
    path = Path(path)
    if path.is_dir():
        raise KdflowError(f"params file {str(path)!r} is a folder; pass a YAML file")
    if not path.is_file():
        raise KdflowError(f"params file {str(path)!r} not found; run from the repository root")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader
    except KdflowError as exc:
        raise KdflowError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    if raw is None:
        raise KdflowError(f"{path} is empty; copy the repository's params.yaml and edit it")
    if not isinstance(raw, dict):
        raise KdflowError(f"{path}: expected a mapping of sections at the top level")
    if any(key not in Params.model_fields for key in raw):
        return raw  # a misspelt section: validation names it and the likely spelling
    for section in Params.model_fields:
        if section not in raw:
            raise KdflowError(f"{path}: section '{section}' is missing; every stage reads it")
        if not isinstance(raw[section], dict):
            raise KdflowError(
                f"{path}: section '{section}' is empty or not a mapping; give its keys "
                "(the repository's params.yaml lists them all)"
            )
    return raw


def load_params(path: str | Path = "params.yaml") -> Params:
    """Return the validated Params read from a YAML file."""
    params = parse_params(read_params_file(path))
    if _TRACE is not None:
        _TRACE.attach(params)
    return params


def params_hash(section: BaseModel | dict[str, Any]) -> str:
    """Return a short sha256 of the canonical JSON of a params section."""
    # A fingerprint for tags and run keys: it bypasses the read trace, because a hash logged
    # beside a run is not an input of the stage's outputs (what a stage hashes into its
    # outputs it reads, and is traced, explicitly).
    data = (
        BaseModel.model_dump(section, by_alias=True) if isinstance(section, BaseModel) else section
    )
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
