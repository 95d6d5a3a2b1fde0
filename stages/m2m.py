"""DVC stage `m2m`: distil teacher module i into student module i inside the meta model (§8)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from kdflow.config import load_params
from stages._assembly import META, TEACHER, check_module_arg, outputs, params_section
from stages._cli import run_stage, stage_parser


def main(args: argparse.Namespace) -> None:
    """Train student module i and its stitches against the frozen teacher module i."""
    params = load_params(args.params)
    cfg = params.assembly
    check_module_arg(args.module, cfg)
    import copy

    from kdflow.assembly import (
        HybridModel,
        M2MObjective,
        assembly_model_meta,
        boundary_shapes,
        check_m2m_boundaries,
        check_module_indices,
        m2m_pair,
    )
    from kdflow.io import sha256_file
    from kdflow.models import build_model
    from kdflow.train.teacher import cross_entropy_objective
    from kdflow.train.trainer import evaluate, fit
    from stages._assembly import load_meta, load_teacher
    from stages._train import training_stage

    i = args.module
    name = f"m2m@{i}"
    keys = ("target", "student", "modules", "seed", "alpha", "tau", "m2m")
    section = {
        **params_section(cfg, *keys, "teacher_incubate_epochs", "incubate"),
        "module": i,
    }
    with training_stage(name, params, section) as stage:
        data = stage.data
        meta = load_meta(stage, cfg)
        teacher, teacher_meta = load_teacher(stage)
        stage.seed(cfg.seed)
        student = build_model(cfg.student, data.input_shape, data.num_classes)
        check_module_indices(cfg.modules, len(student.stages), cfg.student)
        meta_shapes = boundary_shapes(meta, data.input_shape)
        student_shapes = boundary_shapes(student, data.input_shape)
        check_m2m_boundaries(
            meta_shapes,
            boundary_shapes(teacher, data.input_shape),
            student_shapes,
            target=cfg.target,
            teacher_arch=teacher_meta["arch"],
            student_arch=cfg.student,
        )
        # The teacher path: teacher module i between the meta prefix and suffix.
        teacher_path = HybridModel(meta, i, copy.deepcopy(teacher.stages[i]))
        raw = evaluate(teacher_path, data.val, data.num_classes)
        extra = {"module": i, "teacher_path_raw_val_acc": raw["acc"]}
        inputs = [sha256_file(META["model"]), sha256_file(TEACHER)]
        if cfg.teacher_incubate_epochs:
            # m2mKD's preparation: the raw teacher module does not fit the meta model's
            # other layers, so it first learns to, exactly like a DMA incubation.
            incubation = dataclasses.replace(
                stage.fit_config(
                    cfg.incubate.model_copy(update={"epochs": cfg.teacher_incubate_epochs}),
                    cfg.seed,
                    {},
                ),
                checkpoint=None,  # seconds of work; the stage's one checkpoint is the pair's
            )
            done = fit(
                teacher_path,
                cross_entropy_objective,
                data.train,
                data.val,
                incubation,
                num_classes=data.num_classes,
                label=f"{name} teacher module",
            )
            teacher_path.load_state_dict(done.best_state)
            incubated = evaluate(teacher_path, data.val, data.num_classes)
            extra["teacher_path_val_acc"] = incubated["acc"]
        pair = m2m_pair(meta, student, i, meta_shapes, student_shapes)
        result = fit(
            pair,
            M2MObjective(teacher_path.module, cfg.alpha, cfg.tau),
            data.train,
            data.val,
            stage.fit_config(cfg.m2m, cfg.seed, {**section, "inputs": inputs}),
            num_classes=data.num_classes,
            on_epoch_end=stage.log_epoch(),
            label=name,
        )
        stage.finish(
            pair,
            result,
            arch=cfg.target,
            outputs=outputs(f"m2m/{i}"),
            extra_metrics=extra,
            extra_model_meta=assembly_model_meta("m2m", module=i, student=cfg.student),
        )


if __name__ == "__main__":
    parser = stage_parser("m2m", __doc__ or "")
    parser.add_argument("--module", required=True, type=int, help="module index i (0-based)")
    sys.exit(run_stage("m2m", main, parser.parse_args()))
