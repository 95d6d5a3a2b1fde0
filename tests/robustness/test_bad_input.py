"""Bad input, run through the real CLIs: one stderr line, non-zero exit, every output untouched.

Each case is a row of CASES: the command, what it breaks in a fresh copy of the tiny workspace,
and the words its one error line must hold. Params and argument cases fail before torch is
imported (well under a second each); the data, checkpoint and source cases load more, so the
cases run two at a time before their tests check them.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdflow.io import sha256_file
from tests.helpers import set_params
from tests.robustness.helpers import (
    DISTILL_ARGS,
    VENV_BIN,
    copy_workspace,
    make_env,
    read_json,
    snapshot,
    stage_command,
)

pytestmark = pytest.mark.slow

Mutation = Callable[[Path], None]
PREPARED = Path("data/prepared")
TEACHER = Path("models/teacher/mll.pt")
MARKER = "payload-ran"  # written beside the repo by a pickle payload, if a loader ever runs one


@dataclass(frozen=True)
class Case:
    """One bad input: the command, how the workspace is broken, and the expected error line."""

    id: str
    command: tuple[str, ...]  # "stages.NAME …" runs `python -m stages.NAME …`
    mutate: Mutation | None
    expect: tuple[str, ...]  # fragments the single stderr line must hold
    exit_code: int = 2


def student(method: str = "kd", protocol: str = "full") -> tuple[str, ...]:
    """Return the command of the MLL teacher's seed-0 student of `method` and `protocol`."""
    return ("stages.distill", "--teacher", "mll", "--method", method, "--protocol", protocol,
            "--seed", "0")  # fmt: skip


def _argv(case: Case) -> list[str]:
    first, *rest = case.command
    if first.startswith("stages."):
        return stage_command(first.removeprefix("stages."), *rest)
    return [str(VENV_BIN / first), *rest]


# --- mutations --------------------------------------------------------------------------


def params(override: dict[str, Any]) -> Mutation:
    """Merge `override` into params.yaml."""
    return lambda repo: set_params(repo, override)


def params_text(text: str) -> Mutation:
    """Replace params.yaml by `text`."""
    return lambda repo: (repo / "params.yaml").write_text(text)


def edited_params(edit: Callable[[str], str]) -> Mutation:
    """Rewrite params.yaml's text with `edit`."""

    def mutate(repo: Path) -> None:
        path = repo / "params.yaml"
        path.write_text(edit(path.read_text()))

    return mutate


def _rehash(repo: Path) -> None:
    """Make meta.json agree with the tables on disk, as a forged or hand-edited one would."""
    meta_path = repo / PREPARED / "meta.json"
    meta = read_json(meta_path)
    for split in meta["hashes"]:
        meta["hashes"][split] = sha256_file(repo / PREPARED / f"{split}.parquet")
    meta_path.write_text(json.dumps(meta))


def forged(split: str, change: Callable[[Any], Any]) -> Mutation:
    """Rewrite one prepared table with `change` (a polars frame → frame) and forge the hashes."""

    def mutate(repo: Path) -> None:
        import polars as pl

        path = repo / PREPARED / f"{split}.parquet"
        change(pl.read_parquet(path)).write_parquet(path)
        _rehash(repo)

    return mutate


def _with_features(edit: Callable[[np.ndarray], None]) -> Callable[[Any], Any]:
    """Return a table change that edits the N×L feature array in place."""

    def change(table: Any) -> Any:
        import polars as pl

        x = np.array(table["x"].to_numpy())
        edit(x)
        return table.with_columns(pl.Series("x", x))

    return change


def _nan_rows(x: np.ndarray) -> None:
    x[:3, 5] = np.nan


def _labels_as_text(table: Any) -> Any:
    import polars as pl

    return table.with_columns(table["label"].cast(pl.String))


def truncated(relative: Path, keep: float, forge: bool = False) -> Mutation:
    """Cut a file to a fraction of its bytes; with `forge`, make meta.json agree."""

    def mutate(repo: Path) -> None:
        path = repo / relative
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
        if forge:
            _rehash(repo)

    return mutate


class RunsCode:
    """Unpickling this object runs `touch <marker>`: proof that a loader executed a payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def _teacher_file(
    repo: Path, arch: str, input_shape: tuple[int, ...], meta_changes: dict[str, Any]
) -> None:
    """Write a teacher file with weights of `arch` for `input_shape`, its metadata changed."""
    import torch

    from kdflow.data.tensors import read_meta
    from kdflow.models import build_model
    from kdflow.train.checkpoint import data_expectations

    data_meta = read_meta(repo / PREPARED)
    model = build_model(arch, input_shape, data_meta["num_classes"])
    meta = {"arch": arch, **data_expectations(data_meta), "stage": "teacher_mll", **meta_changes}
    torch.save({"meta": meta, "state_dict": model.state_dict()}, repo / TEACHER)


def teacher_of_other_arch(repo: Path) -> None:
    """An mlp's weights in a file whose metadata says cnn3 (a mislabelled or swapped file)."""
    _teacher_file(repo, "mlp", (1, 40), {"arch": "cnn3"})


def teacher_of_other_shape(repo: Path) -> None:
    """A cnn3 teacher for 20-long signals, claiming this data's hash (it was never trained here)."""
    _teacher_file(repo, "cnn3", (1, 20), {"input_shape": [1, 20]})


CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
RECORDS = 20  # per file: 100 training images, 2 test images per class


def cifar(fmt: str, change: Callable[[Path], None]) -> Mutation:
    """Point params at a fresh, balanced fake CIFAR-10 folder ("bin" | "py"), then `change` it."""

    def mutate(repo: Path) -> None:
        root = repo.parent / "cifar"
        folder = root / ("cifar-10-batches-bin" if fmt == "bin" else "cifar-10-batches-py")
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for name in CIFAR_FILES:
            images = rng.integers(0, 256, size=(RECORDS, 3072), dtype=np.uint8)
            labels = np.arange(RECORDS) % 10
            if fmt == "bin":
                rows = np.concatenate([labels[:, None].astype(np.uint8), images], axis=1)
                rows.tofile(folder / f"{name}.bin")
            else:
                batch = {b"data": images, b"labels": labels.tolist()}
                (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        set_params(repo, {"data": {"source": "cifar10", "path": str(root)}})
        change(folder)

    return mutate


def _cut_records(folder: Path) -> None:
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[: 3073 * 5 + 100])


def _payload_batch(folder: Path) -> None:
    batch = {b"data": RunsCode(folder.parents[1] / MARKER), b"labels": []}
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))


def _text_labels(folder: Path) -> None:
    batch = pickle.loads((folder / "test_batch").read_bytes())  # our own file, just written
    batch[b"labels"] = [f"class {label}" for label in batch[b"labels"]]
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))


def _no_class_9_in_test(folder: Path) -> None:
    path = folder / "test_batch.bin"
    rows = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
    rows[rows[:, 0] == 9, 0] = 0
    rows.tofile(path)


# --- the corpus -------------------------------------------------------------------------

MODULE0 = ("--module", "0")
CASES = [
    # params: wrong types, out-of-range values, typos, unknown names (several sections)
    Case(
        "teacher-epochs-not-an-int",
        ("stages.teacher_mll",),
        params({"teacher": {"optim": {"epochs": "ten"}}}),
        ("kdflow teacher_mll: error: params: teacher.optim.epochs = 'ten'", "valid integer"),
    ),
    Case(
        "distill-negative-lr",
        ("stages.distill", *DISTILL_ARGS),
        params({"distill": {"optim": {"lr": -0.1}}}),
        ("kdflow distill: error: params: distill.optim.lr = -0.1", "greater than 0"),
    ),
    Case(
        "data-test-fraction-zero",
        ("stages.prepare",),
        params({"data": {"test_fraction": 0}}),
        ("kdflow prepare: error: params: data.test_fraction = 0", "greater than 0"),
    ),
    Case(
        "typo-teacher-key",
        ("stages.teacher_mll",),
        params({"teacher": {"modle": "cnn3"}}),
        ("kdflow teacher_mll: error: params: unknown key 'teacher.modle'", "'teacher.model'?"),
    ),
    Case(
        "typo-section",
        ("stages.meta",),
        params_text("runtim:\n  threads: 1\n"),
        ("kdflow meta: error: params: unknown key 'runtim'", "did you mean 'runtime'?"),
    ),
    Case(
        "typo-mcmi-lambda",
        ("stages.teacher_mcmi",),
        params({"mcmi": {"lamda": 0.1}}),
        ("kdflow teacher_mcmi: error: params: unknown key 'mcmi.lamda'", "'mcmi.lambda'?"),
    ),
    Case(
        "typo-assembly-optim",
        ("stages.incubate", *MODULE0),
        params({"assembly": {"incubate": {"epoch": 3}}}),
        ("kdflow incubate: error: params: unknown key", "'assembly.incubate.epochs'?"),
    ),
    Case(
        "unknown-teacher-model",
        ("stages.teacher_mll",),
        params({"teacher": {"model": "resnet9000"}}),
        ("kdflow teacher_mll: error: params:", "'resnet9000' is not a known model", "cnn3"),
    ),
    Case(
        "unknown-data-source",
        ("stages.prepare",),
        params({"data": {"source": "imagenet"}}),
        ("kdflow prepare: error: params: data.source = 'imagenet' is invalid", "known: mnist1d"),
    ),
    Case(
        "unknown-device",
        ("stages.m2m", *MODULE0),
        params({"runtime": {"device": "tpu"}}),
        ("kdflow m2m: error: params: runtime.device = 'tpu'", "'cpu'"),
    ),
    Case(
        "tracking-required-not-a-bool",
        ("stages.evaluate",),
        params({"tracking": {"required": "maybe"}}),
        ("kdflow evaluate: error: params: tracking.required = 'maybe'", "valid boolean"),
    ),
    Case(
        "assembly-modules-with-a-gap",
        ("stages.incubate", *MODULE0),
        params({"assembly": {"modules": [0, 2]}}),
        ("kdflow incubate: error: params:", "assembly.modules [0, 2] must list", "0, 1, …"),
    ),
    Case(
        "milestone-past-the-last-epoch",
        ("stages.teacher_mll",),
        params({"teacher": {"optim": {"schedule": "multistep", "milestones": [100]}}}),
        ("kdflow teacher_mll: error: params:", "milestones [100] must lie in (0, epochs=2)"),
    ),
    Case(
        "params-not-yaml",
        ("stages.report",),
        params_text("data: [unclosed\n"),
        ("kdflow report: error: params.yaml: not valid YAML at line 2, column 1",),
    ),
    Case(
        "params-key-written-twice",
        ("stages.prepare",),
        edited_params(lambda text: text.replace("  seed: 0\n", "  seed: 0\n  seed: 1\n", 1)),
        ("kdflow prepare: error: params.yaml: line", "key 'seed' is written twice", "keep one"),
    ),
    Case(
        "params-empty",
        ("stages.teacher_mll",),
        params_text("# all commented out\n"),
        ("kdflow teacher_mll: error: params.yaml is empty",),
    ),
    Case(
        "params-section-missing",
        ("stages.prepare",),
        edited_params(lambda text: text[: text.index("\nassembly:")] + "\n"),
        ("kdflow prepare: error: params.yaml: section 'assembly' is missing",),
    ),
    Case(
        "params-section-empty",
        ("stages.distill", *DISTILL_ARGS),
        edited_params(lambda text: text[: text.index("\nassembly:")] + "\nassembly:\n"),
        ("kdflow distill: error: params.yaml: section 'assembly' is empty or not a mapping",),
    ),
    Case(
        "zeroshot-omits-every-class",
        student(protocol="zeroshot"),
        params({"distill": {"protocol_params": {"zeroshot": {"omit": list(range(10))}}}}),
        ("kdflow distill: error:", "omits every class of this data", "keep at least one"),
    ),
    Case(
        "method-param-not-a-number",
        ("stages.distill", *DISTILL_ARGS),
        params({"distill": {"method_params": {"kd": {"temperature": "hot"}}}}),
        ("kdflow distill: error: params: distill.method_params.kd.temperature", "valid number"),
    ),
    Case(
        "e2e-multistep-schedule",
        ("stages.assembly_e2e", "--baseline", "dma"),
        params({"assembly": {"e2e": {"schedule": "multistep"}}}),
        ("kdflow dma_e2e: error: params: assembly.e2e.schedule", "'cosine' or 'constant'"),
    ),
    # sizes, seeds, sets and method hyper-parameters out of range: the range in the message
    Case(
        "kd-negative-temperature",
        ("stages.distill", *DISTILL_ARGS),
        params({"distill": {"method_params": {"kd": {"temperature": -4}}}}),
        ("kdflow distill: error: kd: hyper-parameter temperature = -4.0", "allowed: > 0"),
    ),
    Case(
        "kd-unknown-hyper-parameter",
        ("stages.distill", *DISTILL_ARGS),
        params({"distill": {"method_params": {"kd": {"temprature": 2}}}}),
        ("kdflow distill: error:", "temprature"),
    ),
    Case(
        "dkd-negative-warmup",
        student("dkd"),
        params({"distill": {"method_params": {"dkd": {"warmup": -1}}}}),
        ("kdflow distill: error: dkd: hyper-parameter warmup = -1.0", "allowed: ≥ 0"),
    ),
    Case(
        "crd-no-negatives",
        student("crd"),
        params({"distill": {"method_params": {"crd": {"nce_k": 0}}}}),
        ("kdflow distill: error: crd: hyper-parameter nce_k = 0.0", "an integer ≥ 1"),
    ),
    Case(
        "distill-negative-seed",
        ("stages.distill", *DISTILL_ARGS),
        params({"distill": {"seeds": [-1]}}),
        ("kdflow distill: error: params:", "distill.seeds [-1] must be distinct and ≥ 0"),
    ),
    Case(
        "assembly-no-seed",
        ("stages.meta", "--seed", "0"),
        params({"assembly": {"seeds": []}}),
        ("kdflow meta: error: params:", "assembly.seeds [] must list one or more"),
    ),
    Case(
        "fewshot-fraction-zero",
        student(protocol="fewshot"),
        params({"distill": {"protocol_params": {"fewshot": {"fraction": 0}}}}),
        ("distill.protocol_params.fewshot.fraction = 0 is invalid", "greater than 0"),
    ),
    Case(
        "fewshot-fraction-above-one",
        student(protocol="fewshot"),
        params({"distill": {"protocol_params": {"fewshot": {"fraction": 1.5}}}}),
        ("distill.protocol_params.fewshot.fraction = 1.5 is invalid", "less than or equal to 1"),
    ),
    Case(
        "zeroshot-omits-a-class-twice",
        student(protocol="zeroshot"),
        params({"distill": {"protocol_params": {"zeroshot": {"omit": [9, 9]}}}}),
        ("kdflow distill: error: params:", "omit [9, 9] must list distinct class indices"),
    ),
    Case(
        "mcmi-negative-lambda",
        ("stages.teacher_mcmi",),
        params({"mcmi": {"lambda": -1}}),
        ("kdflow teacher_mcmi: error: params: mcmi.lambda = -1", "greater than or equal to 0"),
    ),
    Case(
        "mcmi-negative-accuracy-drop",
        ("stages.teacher_mcmi",),
        params({"mcmi": {"max_acc_drop": -0.1}}),
        ("kdflow teacher_mcmi: error: params: mcmi.max_acc_drop = -0.1",),
    ),
    Case(
        "negative-threads",
        ("stages.teacher_mll",),
        params({"runtime": {"threads": -1}}),
        ("kdflow teacher_mll: error: params: runtime.threads = -1", "greater than or equal"),
    ),
    Case(
        "teacher-zero-epochs",
        ("stages.teacher_mll",),
        params({"teacher": {"optim": {"epochs": 0}}}),
        ("kdflow teacher_mll: error: params: teacher.optim.epochs = 0",),
    ),
    Case(
        "m2m-alpha-above-one",
        ("stages.m2m", *MODULE0),
        params({"assembly": {"alpha": 2}}),
        ("kdflow m2m: error: params: assembly.alpha = 2", "less than or equal to 1"),
    ),
    Case(
        "too-few-samples",
        ("stages.prepare",),
        params({"data": {"num_samples": 5}}),
        ("kdflow prepare: error: params: data.num_samples = 5", "greater than or equal to 100"),
    ),
    Case(
        "student-select-unknown",
        ("stages.distill", *DISTILL_ARGS),
        params({"distill": {"select": "best"}}),
        ("kdflow distill: error: params: distill.select = 'best'", "'best_val_acc'"),
    ),
    # paths of the wrong kind
    Case(
        "imagefolder-without-path",
        ("stages.prepare",),
        params({"data": {"source": "imagefolder", "path": None}}),
        ("kdflow prepare: error: params:", "'imagefolder' needs data.path"),
    ),
    Case(
        "cifar-path-is-a-file",
        ("stages.prepare",),
        params({"data": {"source": "cifar10", "path": "params.yaml"}}),
        ("kdflow prepare: error: data.path 'params.yaml' is a file, not a folder",),
    ),
    Case(
        "params-file-is-a-folder",
        ("stages.prepare", "--params", "data"),
        None,
        ("kdflow prepare: error: params file 'data' is a folder; pass a YAML file",),
    ),
    # command lines: unknown method, protocol, module, baseline, stage
    Case(
        "unknown-method",
        student("foo"),
        None,
        # A known method outside distill.methods runs (a student stage never reads the grid's
        # lists, so that growing the grid reruns nothing); an unknown one is refused.
        ("kdflow distill: error: argument --method: invalid choice: 'foo'", "'pkt'", "--help"),
    ),
    Case(
        "unknown-protocol",
        student(protocol="halfshot"),
        None,
        ("kdflow distill: error: argument --protocol: invalid choice: 'halfshot'", "--help"),
    ),
    Case(
        "module-not-in-params",
        ("stages.incubate", "--module", "7"),
        None,
        ("kdflow incubate: error: --module 7 is not in assembly.modules [0, 1, 2]",),
    ),
    Case(
        "unknown-baseline",
        ("stages.assembly_e2e", "--baseline", "best"),
        None,
        ("kdflow assembly_e2e: error: argument --baseline: invalid choice: 'best'",),
    ),
    Case(
        "dvc-unknown-stage",
        ("dvc", "repro", "nosuchstage"),
        None,
        ("ERROR:", "'nosuchstage' not found", "dvc.yaml"),
        exit_code=255,
    ),
    Case(
        "unknown-stage-module",
        ("stages.nosuchstage",),
        None,
        ("No module named stages.nosuchstage",),
        exit_code=1,
    ),
    # prepared tables that agree with a forged meta.json, so only their content is wrong
    Case(
        "table-truncated",
        ("stages.teacher_mll",),
        truncated(PREPARED / "train.parquet", 0.5, forge=True),
        ("kdflow teacher_mll: error: data/prepared/train.parquet is not a readable Parquet",),
    ),
    Case(
        "table-without-labels",
        ("stages.meta",),
        forged("train", lambda t: t.drop("label")),
        ("kdflow meta: error: data/prepared/train.parquet has no column(s) label", "rerun"),
    ),
    Case(
        "labels-as-text",
        ("stages.teacher_mll",),
        forged("val", _labels_as_text),
        ("kdflow teacher_mll: error: data/prepared/val.parquet: column 'label' holds String",),
    ),
    Case(
        "nan-features",
        ("stages.distill", *DISTILL_ARGS),
        forged("train", _with_features(_nan_rows)),
        ("kdflow distill: error: data/prepared/train.parquet: 3 row(s) have NaN or infinite",),
    ),
    Case(
        "labels-out-of-range",
        ("stages.teacher_mll",),
        forged("test", lambda t: t.with_columns(t["label"] + 5)),
        ("kdflow teacher_mll: error: data/prepared/test.parquet: labels span [5, 14]", "0..9"),
    ),
    Case(
        "empty-split",
        ("stages.teacher_mll",),
        forged("val", lambda t: t.head(0)),
        ("kdflow teacher_mll: error: data/prepared/val.parquet has no rows", "rerun the prepare"),
    ),
    Case(
        "class-missing-from-train",
        ("stages.teacher_mll",),
        forged("train", lambda t: t.filter(t["label"] != 3)),
        ("kdflow teacher_mll: error: data/prepared/train.parquet: no sample of class(es) [3]",),
    ),
    # model files
    Case(
        "teacher-truncated",
        ("stages.distill", *DISTILL_ARGS),
        truncated(TEACHER, 0.5),
        ("kdflow distill: error: models/teacher/mll.pt is not a readable kdflow model file",),
    ),
    Case(
        "teacher-of-other-architecture",
        ("stages.distill", *DISTILL_ARGS),
        teacher_of_other_arch,
        ("kdflow distill: error: models/teacher/mll.pt: weights do not fit cnn3", "rerun"),
    ),
    Case(
        "teacher-of-other-input-shape",
        ("stages.distill", *DISTILL_ARGS),
        teacher_of_other_shape,
        (
            "kdflow distill: error: models/teacher/mll.pt was trained for input_shape=[1, 20]",
            "input_shape=[1, 40]",
        ),  # fmt: skip
    ),
    # raw sources for prepare: fake CIFAR-10 folders
    Case(
        "cifar-file-cut-mid-record",
        ("stages.prepare",),
        cifar("bin", _cut_records),
        ("kdflow prepare: error:", "data_batch_3.bin: 15465 bytes", "3073-byte records"),
    ),
    Case(
        "cifar-pickle-with-code-payload",
        ("stages.prepare",),
        cifar("py", _payload_batch),
        ("kdflow prepare: error:", "data_batch_1: refused to unpickle"),
    ),
    Case(
        "cifar-labels-as-text",
        ("stages.prepare",),
        cifar("py", _text_labels),
        ("kdflow prepare: error:", "test_batch: b'labels' must be a list of integer class"),
    ),
    Case(
        "cifar-class-missing-from-test",
        ("stages.prepare",),
        cifar("bin", _no_class_9_in_test),
        ("kdflow prepare: error: prepared data failed validation: test:", "[9]", "rerun prepare"),
    ),
]


@dataclass
class Outcome:
    """What one case did: the finished command and the output hashes around it."""

    done: subprocess.CompletedProcess[str] | None
    before: dict[str, str]
    after: dict[str, str]
    payload_ran: bool
    error: Exception | None = None  # a broken mutation: reported by the case's own test


def _run_case(case: Case, workspace: Path, root: Path, template_db: Path) -> Outcome:
    """Break a fresh copy of the workspace as the case says, run its command, hash around it."""
    root.mkdir()
    try:
        repo = copy_workspace(workspace, root / "repo")
        if case.mutate is not None:
            case.mutate(repo)
        shutil.copyfile(template_db, root / "mlflow.db")
        env = make_env(f"sqlite:///{root / 'mlflow.db'}")
        env["DVC_SITE_CACHE_DIR"] = str(root / "dvc-site-cache")
        before = snapshot(repo)
        done = subprocess.run(
            _argv(case), cwd=repo, env=env, capture_output=True, text=True, timeout=120
        )
        return Outcome(done, before, snapshot(repo), (root / MARKER).exists())
    except Exception as exc:
        return Outcome(None, {}, {}, False, error=exc)


def _selected(request: pytest.FixtureRequest) -> set[str]:
    """Return the ids of the cases this pytest session runs (after -k and the like)."""
    return {
        item.callspec.params["case"].id
        for item in request.session.items
        # Other modules parametrize over a "case" of their own.
        if item.path == request.path
        and hasattr(item, "callspec")
        and "case" in item.callspec.params
    }


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest,
    workspace: Path,
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_template_db: Path,
) -> dict[str, Outcome]:
    """Run the selected cases, two at a time: each is its own process in its own copy."""
    base = tmp_path_factory.mktemp("cases")
    wanted = [case for case in CASES if case.id in _selected(request)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            case.id: pool.submit(_run_case, case, workspace, base / case.id, mlflow_template_db)
            for case in wanted
        }
    return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_fails_in_one_line_and_changes_no_output(
    case: Case, outcomes: dict[str, Outcome]
) -> None:
    outcome = outcomes[case.id]
    if outcome.error is not None:
        raise outcome.error
    assert outcome.done is not None
    stderr = outcome.done.stderr

    assert outcome.done.returncode == case.exit_code, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    for fragment in case.expect:
        assert fragment in lines[0], lines[0]
    assert outcome.after == outcome.before
    assert not outcome.payload_ran, "a pickle payload ran"


def test_the_corpus_is_large_and_its_payloads_are_real(tmp_path: Path) -> None:
    assert len(CASES) >= 30
    # Plain pickle runs the payload the corpus plants, so its absence above means something.
    pickle.loads(pickle.dumps(RunsCode(tmp_path / MARKER), protocol=2))
    assert (tmp_path / MARKER).exists()
