"""What the assembly stages share: output paths and reading the upstream models and metrics.

Every assembly stage runs once per seed of `assembly.seeds` (a DVC matrix; the stage gets
`--seed`), and every output name ends in `-s<seed>`, as the students' do. The meta model
and the per-module checkpoints live beside the six final models, which are the only ones
`evaluate` scores:

    models/assembly/meta-s<seed>.pt, incubate/s<seed>/<i>.pt, m2m/s<seed>/<i>.pt
                                                 (meta and module checkpoints)
    models/assembly/{dma,dma_e2e,dma_scratch,m2m,m2m_e2e,m2m_scratch}-s<seed>.pt
                                                 (final models)
    metrics/assembly/…json, plots/assembly/…tsv  (same names)

kdflow names each run (MLflow tag, run record, resume checkpoint) `<stage>@s<seed>`, or
`<stage>@<i>-s<seed>` for a per-module stage.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdflow.config import AssemblyParams
from kdflow.errors import KdflowError

if TYPE_CHECKING:  # stages import torch only once their params are valid
    from kdflow.assembly import MetaModel
    from kdflow.models.base import KDModel
    from kdflow.train.trainer import Objective
    from stages._train import TrainingStage

MODELS = Path("models/assembly")
METRICS = Path("metrics/assembly")
PLOTS = Path("plots/assembly")
TEACHER = Path("models/teacher/mll.pt")


def output_name(kind: str, seed: int, module: int | None = None) -> str:
    """Return an output's name: `dma-s0`, `meta-s1`, `incubate/s0/2` (module 2, seed 0).

    A seed's modules share one folder, so the stage assembling them depends on that folder
    alone and another seed's modules never make it stale.
    """
    return f"{kind}-s{seed}" if module is None else f"{kind}/s{seed}/{module}"


def stage_name(stage: str, seed: int, module: int | None = None) -> str:
    """Return kdflow's name of a run: `assemble@s0`, `incubate@2-s0` (module 2, seed 0)."""
    return f"{stage}@s{seed}" if module is None else f"{stage}@{module}-s{seed}"


def outputs(name: str) -> dict[str, Path]:
    """Return the model, metrics and plots paths of output `name` (e.g. "dma-s0")."""
    return {
        "model": MODELS / f"{name}.pt",
        "metrics": METRICS / f"{name}.json",
        "plots": PLOTS / f"{name}.tsv",
    }


def meta_outputs(seed: int) -> dict[str, Path]:
    """Return the output paths of the meta model of `seed`."""
    return outputs(output_name("meta", seed))


def add_seed_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--seed`: the one seed of assembly.seeds this run trains (dvc.yaml passes it)."""
    parser.add_argument("--seed", type=int, default=0, help="seed of this run (default 0)")


def read_metrics(path: Path) -> dict[str, Any]:
    """Return an upstream stage's metrics record, or say which stage to run."""
    if not path.is_file():
        raise KdflowError(f"{path} not found; run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text())


def check_module_arg(module: int, cfg: AssemblyParams) -> None:
    """Raise KdflowError unless `--module` is one of assembly.modules."""
    if module not in cfg.modules:
        raise KdflowError(f"--module {module} is not in assembly.modules {cfg.modules}")


def params_section(cfg: AssemblyParams, *keys: str) -> dict[str, Any]:
    """Return {"assembly": the named keys of the section}: what a stage logs and keys runs on."""
    return {"assembly": cfg.model_dump(include=set(keys))}


def expected_meta(stage: TrainingStage) -> dict[str, Any]:
    """Return the checkpoint metadata an upstream model must have for this stage's data."""
    from kdflow.train.checkpoint import data_expectations

    return data_expectations(stage.data.meta)


def load_meta(stage: TrainingStage, cfg: AssemblyParams, seed: int) -> MetaModel:
    """Return the trained meta model of assembly.target and `seed` on the stage's device."""
    from kdflow.assembly import load_assembly_model

    model, _ = load_assembly_model(
        meta_outputs(seed)["model"],
        role="meta",
        target=cfg.target,
        expect=expected_meta(stage),
        device=stage.device,
    )
    return model


def load_modules(
    stage: TrainingStage, cfg: AssemblyParams, role: str, meta: MetaModel, seed: int
) -> tuple[list[tuple[Any, dict[str, Any]]], list[str], list[dict[str, Any]]]:
    """Return each module checkpoint of `role` and `seed` (model, metadata), hashes and metrics.

    Every module must have been trained inside this very `meta` model: only then do the
    modules fit together.
    """
    from kdflow.assembly import check_same_meta, load_assembly_model
    from kdflow.io import sha256_file

    loaded, hashes, records = [], [], []
    for i in cfg.modules:
        files = outputs(output_name(role, seed, i))
        model, model_meta = load_assembly_model(
            files["model"],
            role=role,
            target=cfg.target,
            expect=expected_meta(stage),
            device=stage.device,
        )
        check_same_meta(model, meta, files["model"])
        loaded.append((model, model_meta))
        hashes.append(sha256_file(files["model"]))
        records.append(read_metrics(files["metrics"]))
    return loaded, hashes, records


def load_teacher(stage: TrainingStage) -> tuple[KDModel, dict[str, Any]]:
    """Return the MLL teacher, in eval mode on the stage's device, and its metadata."""
    from kdflow.train.checkpoint import load_model

    teacher, meta = load_model(TEACHER, expect=expected_meta(stage), device=stage.device)
    return teacher.eval(), meta


def student_objective(
    stage: TrainingStage, cfg: AssemblyParams, student: KDModel, epochs: int
) -> Objective:
    """Return the end-to-end objective of the m2mKD student: CE, or CE + KD when finetune_kd.

    With KD the weights are the pair loss's: (1 − α)·CE + α·τ²·KL to the MLL teacher.
    """
    from kdflow.train.distill import build_objective
    from kdflow.train.teacher import cross_entropy_objective

    if not cfg.finetune_kd:
        return cross_entropy_objective
    teacher, _ = load_teacher(stage)
    settings = {"gamma": 1 - cfg.alpha, "alpha": cfg.alpha, "temperature": cfg.tau}
    return build_objective(
        "kd",
        [student],
        teacher,
        stage.data.train,
        epochs=epochs,
        cache_teacher=True,
        settings=settings,
    )


def assembled_accuracy(stage: TrainingStage, model: KDModel) -> dict[str, float]:
    """Return the assembled model's val and test accuracy as assembled, before its fine-tune."""
    from kdflow.train.trainer import evaluate

    data = stage.data
    return {
        "assembled_val_acc": evaluate(model, data.val, data.num_classes)["acc"],
        "assembled_test_acc": evaluate(model, data.test, data.num_classes)["acc"],
    }
