"""The model-assembly stages as users run them: DMA and m2mKD end to end on a tiny pipeline.

One module-wide scratch repository gets 500 prepared MNIST-1D samples and an (untrained)
resnet8 MLL teacher file, then runs every assembly stage of one seed (1, so that the seed
reaches every name) for one epoch: meta and the four baselines side by side, then the six
per-module stages side by side, then the two assembling stages. Each process has its own
MLflow store (SQLite dislikes concurrent writers).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kdflow.config import DataParams
from kdflow.data.prepare import prepare
from kdflow.train.checkpoint import load_model
from tests.helpers import StageProcesses, set_params

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
MODULES = [0, 1, 2]
SEED = 1
EPOCHS = {"meta": 1, "incubate": 1, "finetune": 2, "m2m": 1, "m2m_finetune": 1}
LR = {"m2m": 0.01}  # the default's: a pair feeds frozen layers, which diverge at 0.05
TINY = {
    "data": {"num_samples": 500},
    "runtime": {"device": "cpu", "threads": 1, "deterministic": False},
    "assembly": {
        "target": "resnet14",
        "student": "wrn_16_1",
        "modules": MODULES,
        "seeds": [SEED],
        "teacher_incubate_epochs": 1,
        "finetune_kd": True,  # exercise the KD path of m2m_assemble and m2m_e2e
        **{k: {"epochs": e, "batch_size": 64, "lr": LR.get(k, 0.05)} for k, e in EPOCHS.items()},
        "e2e": {"batch_size": 64, "lr": 0.05},
    },
}
FINAL_STAGES = {  # final model → the stage that writes it
    "dma": "assemble",
    "dma_e2e": "dma_e2e",
    "dma_scratch": "dma_scratch",
    "m2m": "m2m_assemble",
    "m2m_e2e": "m2m_e2e",
    "m2m_scratch": "m2m_scratch",
}
FINAL = tuple(FINAL_STAGES)
PER_MODULE = ("incubate", "m2m")
BASELINES = {  # stage → its arguments
    "dma_e2e": ("--baseline", "dma"),
    "m2m_e2e": ("--baseline", "m2m"),
    "dma_scratch": ("--baseline", "dma", "--budget", "finetune"),
    "m2m_scratch": ("--baseline", "m2m", "--budget", "finetune"),
}
SEED_ARGS = ("--seed", str(SEED))


def _out(name: str, module: int | None = None) -> str:
    """Return the output name of this seed's `name` (module i's for a per-module stage)."""
    return f"{name}-s{SEED}" if module is None else f"{name}/s{SEED}/{module}"


def _stage(name: str, module: int | None = None) -> str:
    """Return kdflow's name of this seed's run of stage `name`."""
    return f"{name}@s{SEED}" if module is None else f"{name}@{module}-s{SEED}"


def _scratch(root: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tree in ("kdflow", "stages"):
        shutil.copytree(REPO / tree, root / tree, ignore=ignore)
    set_params(root, TINY)
    return root


def _write_teacher(repo: Path) -> None:
    """Write a resnet8 MLL teacher file for this data: m2m needs its modules, not its accuracy.

    Untrained, so its teacher paths sit near chance; the stages' mechanics are under test here.
    """
    from kdflow.models import build_model
    from kdflow.train.checkpoint import data_fingerprint, save_model

    meta = json.loads((repo / "data" / "prepared" / "meta.json").read_text())
    torch.manual_seed(0)
    teacher = build_model("resnet8", tuple(meta["input_shape"]), meta["num_classes"])
    info = {
        "arch": "resnet8",
        "input_shape": meta["input_shape"],
        "num_classes": meta["num_classes"],
        "data_hash": data_fingerprint(meta),
    }
    save_model(repo / "models" / "teacher" / "mll.pt", teacher, info)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path) -> dict:
    """Return the scratch repository after every assembly stage, and each stage's MLflow URI."""
    repo = _scratch(tmp_path_factory.mktemp("assembly") / "repo")
    stages = StageProcesses(repo, mlflow_template_db)
    # In process: the prepare stage has its own tests, and a process costs seconds here.
    prepare(DataParams(num_samples=TINY["data"]["num_samples"]), repo / "data" / "prepared")
    _write_teacher(repo)
    try:
        meta = stages.start("meta", *SEED_ARGS)
        baselines = [stages.start("assembly_e2e", *a, *SEED_ARGS) for a in BASELINES.values()]
        stages.wait(meta)
        # The per-module stages need only the meta model (and the teacher): all at once.
        modules = [
            stages.start(s, "--module", str(i), *SEED_ARGS) for s in PER_MODULE for i in MODULES
        ]
        stages.wait(*modules)
        assembling = [stages.start(s, *SEED_ARGS) for s in ("assemble", "m2m_assemble")]
        stages.wait(*baselines, *assembling)
    finally:
        stages.stop()
    return {"repo": repo, "stores": stages.stores}


def _metrics(repo: Path, name: str) -> dict[str, Any]:
    return json.loads((repo / "metrics" / "assembly" / f"{name}.json").read_text())


def test_final_models_have_checked_metrics_and_load_as_zoo_models(pipeline):
    repo = pipeline["repo"]
    for name in FINAL:
        metrics = _metrics(repo, _out(name))
        assert metrics["validation"] == "passed", name
        assert metrics["seed"] == SEED, name
        for key in ("test_acc", "val_acc"):
            assert 0.0 <= metrics[key] <= 1.0, (name, key)
        assert not [k for k in metrics if k.endswith("seconds") or "run_id" in k], name
        assert _run_record(repo, _stage(FINAL_STAGES[name]))["train_seconds"] > 0, name
        assert (repo / "plots" / "assembly" / f"{_out(name)}.tsv").is_file(), name
        model, meta = load_model(repo / "models" / "assembly" / f"{_out(name)}.pt")
        assert meta["arch"] == ("resnet14" if name.startswith("dma") else "wrn_16_1"), name
        assert meta["stage"] == _stage(FINAL_STAGES[name])
        assert model.eval()(torch.zeros(2, 1, 40)).shape == (2, 10)
    # The e2e baselines train for the total epochs of their modular counterparts.
    dma_budget = EPOCHS["meta"] + len(MODULES) * EPOCHS["incubate"] + EPOCHS["finetune"]
    m2m_budget = len(MODULES) * EPOCHS["m2m"] + EPOCHS["m2m_finetune"]
    dma, m2m = _metrics(repo, _out("dma")), _metrics(repo, _out("m2m"))
    assert _metrics(repo, _out("dma_e2e"))["epochs"] == dma["epoch_budget"] == dma_budget
    assert _metrics(repo, _out("m2m_e2e"))["epochs"] == m2m["epoch_budget"] == m2m_budget
    # The scratch baselines train for the fine-tune's epochs only.
    assert _metrics(repo, _out("dma_scratch"))["epochs"] == dma["epochs"] == EPOCHS["finetune"]
    assert dma["finetune_epochs"] == EPOCHS["finetune"]
    scratch = _metrics(repo, _out("m2m_scratch"))
    assert scratch["epochs"] == m2m["epochs"] == m2m["finetune_epochs"] == EPOCHS["m2m_finetune"]
    assert scratch["budget"] == "finetune" and scratch["epoch_budget"] == EPOCHS["m2m_finetune"]
    assert not any((repo / "checkpoints").glob("*.pt"))


def test_assembled_models_report_their_accuracy_before_and_after_the_fine_tune(pipeline):
    from kdflow.assembly import assemble, load_assembly_model
    from kdflow.data.tensors import load_prepared
    from kdflow.models import build_model
    from kdflow.train.trainer import evaluate

    repo = pipeline["repo"]
    data = load_prepared(repo / "data" / "prepared")
    for final, kind, arch in (("dma", "incubate", "resnet14"), ("m2m", "m2m", "wrn_16_1")):
        metrics = _metrics(repo, _out(final))
        before = {k: metrics[f"assembled_{k}"] for k in ("val_acc", "test_acc")}
        assert all(0.0 <= v <= 1.0 for v in before.values()), final
        # The before-figures are those of the module checkpoints chained: recompute them.
        hybrids = [
            load_assembly_model(
                repo / "models" / "assembly" / f"{_out(kind, i)}.pt", role=kind, target="resnet14"
            )[0]
            for i in MODULES
        ]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the stages ran on one thread (TINY)
        try:
            model = assemble(build_model(arch, data.input_shape, data.num_classes), hybrids)
            for split in ("val", "test"):
                acc = evaluate(model, getattr(data, split), data.num_classes)["acc"]
                assert acc == pytest.approx(before[f"{split}_acc"], abs=1e-9), (final, split)
        finally:
            torch.set_num_threads(threads)
        # And the fine-tuned model moved away from the assembled one.
        tuned, _ = load_model(repo / "models" / "assembly" / f"{_out(final)}.pt")
        assert any(
            not torch.equal(a, b)
            for a, b in zip(tuned.state_dict().values(), model.state_dict().values(), strict=True)
        )


def _run_record(repo: Path, stage: str) -> dict[str, Any]:
    """Return a stage's untracked run record (its MLflow run id and durations)."""
    return json.loads((repo / ".kdflow" / "runs" / f"{stage}.json").read_text())


@pytest.mark.parametrize(
    ("final", "stage", "kind"), [("dma", "assemble", "incubate"), ("m2m", "m2m_assemble", "m2m")]
)
def test_assembled_metrics_carry_every_module_and_honest_times(pipeline, final, stage, kind):
    from mlflow.tracking import MlflowClient

    repo = pipeline["repo"]
    metrics = _metrics(repo, _out(final))
    modules = [_metrics(repo, _out(kind, i)) for i in MODULES]

    assert [m["module"] for m in metrics["modules"]] == MODULES
    for summary, module in zip(metrics["modules"], modules, strict=True):
        assert module["validation"] == "passed"
        for key in ("val_acc", "test_acc", "best_epoch", "epochs", "stage"):
            assert summary[key] == module[key], key
    assert 0.0 <= metrics["assembled_val_acc"] <= 1.0
    # Module 0 trained the stem, module K−1 the head, and no other module either of them.
    assert [m["trains"][0] == "stem." for m in modules] == [True, False, False]
    assert [m["trains"][-1] == "head." for m in modules] == [False, False, True]
    if kind == "m2m":
        for module in modules:
            assert 0.0 <= module["teacher_path_raw_val_acc"] <= 1.0
            assert 0.0 <= module["teacher_path_val_acc"] <= 1.0
    # The times differ between identical runs: they are in the run record and MLflow only.
    assert not any(k.endswith("seconds") for k in metrics)
    record = _run_record(repo, _stage(stage))
    meta_seconds = _run_record(repo, _stage("meta"))["train_seconds"]
    seconds = [_run_record(repo, _stage(kind, i))["train_seconds"] for i in MODULES]
    assert record["meta_seconds"] == meta_seconds
    assert record["train_seconds_parallel"] == pytest.approx(
        meta_seconds + max(seconds) + record["stage_seconds"], abs=0.02
    )
    assert record["train_seconds"] == pytest.approx(
        meta_seconds + sum(seconds) + record["stage_seconds"], abs=0.02
    )
    store = pipeline["stores"]["-".join([stage, *SEED_ARGS]).replace("--", "")]
    run = MlflowClient(tracking_uri=store).get_run(record["mlflow_run_id"])
    assert run.data.metrics["train_seconds_parallel"] == record["train_seconds_parallel"]


def test_every_stage_has_a_finished_validated_mlflow_run(pipeline):
    from mlflow.tracking import MlflowClient

    repo = pipeline["repo"]
    seed = "-".join(SEED_ARGS).replace("--", "")

    def slug(stage: str, *args: str) -> str:
        return "-".join([stage, *args]).replace("--", "") + f"-{seed}"

    expected = {
        slug("meta"): (_stage("meta"), _metrics(repo, _out("meta"))),
        slug("assemble"): (_stage("assemble"), _metrics(repo, _out("dma"))),
        slug("m2m_assemble"): (_stage("m2m_assemble"), _metrics(repo, _out("m2m"))),
    }
    for name, args in BASELINES.items():
        expected[slug("assembly_e2e", *args)] = (_stage(name), _metrics(repo, _out(name)))
    for kind in PER_MODULE:
        for i in MODULES:
            expected[slug(kind, "--module", str(i))] = (
                _stage(kind, i),
                _metrics(repo, _out(kind, i)),
            )
    for key, (stage, metrics) in expected.items():
        client = MlflowClient(tracking_uri=pipeline["stores"][key])
        experiment = client.get_experiment_by_name("kdflow")
        assert experiment is not None, key
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.data.tags["kdflow.stage"] == stage
        assert run.info.status == "FINISHED", stage
        assert run.data.tags["kdflow.validation"] == "passed", stage
        assert run.info.run_id == _run_record(repo, stage)["mlflow_run_id"], stage
        assert metrics["stage"] == stage
        assert run.data.metrics["test_acc"] == pytest.approx(metrics["test_acc"]), stage


def test_evaluate_scores_the_six_final_models_by_name(pipeline, tmp_path):
    from kdflow.data.tensors import load_prepared
    from kdflow.evaluation import evaluate_model, find_models

    repo = pipeline["repo"]
    # Only the assembly outputs: this repository's teacher file has no stage metrics.
    for tree in ("models", "metrics"):
        (tmp_path / tree).mkdir()
        (tmp_path / tree / "assembly").symlink_to(repo / tree / "assembly")
    names = [f"assembly/{_out(n)}" for n in sorted(FINAL)]
    entries = find_models(tmp_path / "models", tmp_path / "metrics", names)

    assert [e["name"] for e in entries] == names
    data = load_prepared(repo / "data" / "prepared")
    # The stages ran on one thread (TINY); a different thread count may split the sums of a
    # convolution differently and flip a borderline prediction.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        records = [evaluate_model(entry, data)[0] for entry in entries]
    finally:
        torch.set_num_threads(threads)
    for entry, record in zip(entries, records, strict=True):
        assert record["name"] == entry["name"] and record["kind"] == "assembly"
        output = entry["name"].split("/")[1]
        assert record["test_acc"] == pytest.approx(_metrics(repo, output)["test_acc"], abs=1e-9)


def test_a_student_with_other_strides_is_one_line_exit_2(
    pipeline, repo_copy, stage_env, tracking_db
):
    repo = pipeline["repo"]
    set_params(repo_copy, TINY)
    set_params(repo_copy, {"assembly": {"student": "cnn3"}})
    for path in ("data/prepared", "models/teacher", f"models/assembly/{_out('meta')}.pt"):
        source, target = repo / path, repo_copy / path
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)

    done = subprocess.run(
        [PYTHON, "-m", "stages.m2m", "--module", "1", *SEED_ARGS],
        cwd=repo_copy,
        env=stage_env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 2, done.stderr
    # The error is the last line (progress lines may precede it), and no traceback.
    assert "Traceback" not in done.stderr, done.stderr
    assert re.fullmatch(
        r"kdflow m2m: error: m2m: assembly.student cnn3 \(.*\) and the teacher resnet8 "
        r"\(16×40 → 16×40 → 32×20 → 64×10\) differ in spatial size at boundary 1; stitch "
        r"layers adapt widths only, so pick a student with the teacher's strides and pooling",
        done.stderr.splitlines()[-1],
    ), done.stderr
    assert not (repo_copy / "models" / "assembly" / "m2m").exists()
    assert not (repo_copy / "metrics").exists()


def test_per_module_stages_are_side_by_side_in_the_dag(repo_copy, stage_env):
    done = subprocess.run(
        [str(Path(PYTHON).parent / "dvc"), "dag", "--dot"],
        cwd=repo_copy,
        env=stage_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    edges = set(re.findall(r'"([^"]+)" -> "([^"]+)"', done.stdout))

    # DVC names a matrix stage by its values: incubate@<module>-<seed>, assemble@<seed>.
    seeds = [0, 1, 2]  # the default assembly.seeds
    per_module = {f"{kind}@{i}-{s}" for kind in PER_MODULE for i in MODULES for s in seeds}
    assert not [edge for edge in edges if set(edge) <= per_module]
    for s in seeds:
        for i in MODULES:
            assert ("meta@" + str(s), f"incubate@{i}-{s}") in edges
            assert ("meta@" + str(s), f"m2m@{i}-{s}") in edges
            assert ("teacher_mll", f"m2m@{i}-{s}") in edges
            assert (f"incubate@{i}-{s}", f"assemble@{s}") in edges
            assert (f"m2m@{i}-{s}", f"m2m_assemble@{s}") in edges
        for stage in ("assemble", "m2m_assemble", *BASELINES):
            assert (f"{stage}@{s}", "evaluate") in edges, stage

    # A seed's stages read nothing of another seed's.
    def seed_of(node: str) -> str:
        return node.split("@")[1].split("-")[-1]

    crossing = [
        (a, b)
        for a, b in edges
        if "@" in a and "@" in b and a.split("@")[0] in {"meta", *PER_MODULE}
        if seed_of(a) != seed_of(b)
    ]
    assert crossing == []
    # The baselines need nothing the modular runs make: they can run from the start.
    modular = per_module | {f"meta@{s}" for s in seeds}
    for stage in BASELINES:
        assert not [a for a, b in edges if b.startswith(f"{stage}@") and a in modular]
