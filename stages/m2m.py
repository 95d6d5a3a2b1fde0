"""DVC stage `m2m`: distil teacher module i into student module i inside the meta model."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from kdflow.config import load_params
from stages._assembly import (
    TEACHER,
    add_seed_argument,
    check_module_arg,
    meta_outputs,
    output_name,
    outputs,
    params_section,
    stage_name,
)
from stages._cli import run_stage, stage_parser


def main(args: argparse.Namespace) -> None:
    """Train student module i and its stitches against the frozen teacher module i.

    Module 0 of each network owns its stem and module K−1 its head: pair 0 trains the
    student's stem, pair K−1 its head, and their teacher paths run the teacher's.
    """
    params = load_params(args.params)
    cfg, seed, i = params.assembly, args.seed, args.module
    check_module_arg(i, cfg)
    from kdflow.assembly import (
        M2MObjective,
        assembly_model_meta,
        boundary_shapes,
        check_m2m_boundaries,
        check_module_indices,
        incubation_model,
        m2m_pair,
    )
    from kdflow.io import sha256_file
    from kdflow.models import build_model
    from kdflow.train.teacher import cross_entropy_objective
    from kdflow.train.trainer import evaluate, fit
    from stages._assembly import load_meta, load_teacher
    from stages._train import training_stage

    name = stage_name("m2m", seed, i)
    keys = ("target", "student", "modules", "alpha", "tau", "m2m")
    section = {
        **params_section(cfg, *keys, "teacher_incubate_epochs", "incubate"),
        "module": i,
        "seed": seed,
    }
    with training_stage(name, params, section) as stage:
        data = stage.data
        meta = load_meta(stage, cfg, seed)
        teacher, teacher_meta = load_teacher(stage)
        stage.seed(seed)
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
        # The teacher path: teacher module i (with the teacher's stem or head it owns)
        # between the meta prefix and suffix.
        teacher_path = incubation_model(meta, teacher, i)
        raw = evaluate(teacher_path, data.val, data.num_classes)
        extra = {"module": i, "seed": seed, "teacher_path_raw_val_acc": raw["acc"]}
        inputs = [sha256_file(meta_outputs(seed)["model"]), sha256_file(TEACHER)]
        if cfg.teacher_incubate_epochs:
            # m2mKD's preparation: the raw teacher module does not fit the meta model's
            # other layers, so it first learns to, exactly like a DMA incubation.
            incubation = dataclasses.replace(
                stage.fit_config(
                    cfg.incubate.model_copy(update={"epochs": cfg.teacher_incubate_epochs}),
                    seed,
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
            M2MObjective(teacher_path, cfg.alpha, cfg.tau),
            data.train,
            data.val,
            stage.fit_config(cfg.m2m, seed, {**section, "inputs": inputs}),
            num_classes=data.num_classes,
            on_epoch_end=stage.log_epoch(),
            label=name,
        )
        stage.finish(
            pair,
            result,
            arch=cfg.target,
            outputs=outputs(output_name("m2m", seed, i)),
            extra_metrics={**extra, "trains": pair.trained_names()},
            extra_model_meta=assembly_model_meta("m2m", model=pair, module=i, student=cfg.student),
        )


if __name__ == "__main__":
    parser = stage_parser("m2m", __doc__ or "")
    parser.add_argument("--module", required=True, type=int, help="module index i (0-based)")
    add_seed_argument(parser)
    sys.exit(run_stage("m2m", main, parser.parse_args()))
