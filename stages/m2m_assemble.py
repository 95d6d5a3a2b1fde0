"""DVC stage `m2m_assemble`: chain the distilled student modules and train end to end (§8)."""

from __future__ import annotations

import argparse
import sys

from kdflow.config import load_params
from stages._assembly import META, TEACHER, outputs, params_section
from stages._cli import run_stage, stage_parser


def main(args: argparse.Namespace) -> None:
    """Put the m2mKD modules (stitches dropped) into the student, then train it end to end."""
    params = load_params(args.params)
    from kdflow.assembly import assemble, check_module_indices, combine_module_records
    from kdflow.assembly.assemble import recorded_time_totals
    from kdflow.errors import KdflowError
    from kdflow.io import sha256_file
    from kdflow.models import build_model
    from kdflow.train.trainer import evaluate, fit
    from stages._assembly import load_meta, load_modules, student_objective
    from stages._train import training_stage

    cfg = params.assembly
    keys = ("target", "student", "modules", "seed", "alpha", "tau", "finetune_kd")
    section = params_section(cfg, *keys, "m2m_finetune")
    with training_stage("m2m_assemble", params, section) as stage:
        data = stage.data
        meta = load_meta(stage, cfg)
        loaded, hashes, records = load_modules(stage, cfg, "m2m", meta)
        for i, (_, pair_meta) in zip(cfg.modules, loaded, strict=True):
            if pair_meta["assembly"]["student"] != cfg.student:
                raise KdflowError(
                    f"{outputs(f'm2m/{i}')['model']} holds a module of "
                    f"{pair_meta['assembly']['student']!r}, not assembly.student "
                    f"{cfg.student!r}; rerun m2m@{i}"
                )
        modules = [pair.module.module for pair, _ in loaded]  # without their stitches
        teacher_hash = sha256_file(TEACHER) if cfg.finetune_kd else ""
        inputs = [sha256_file(META["model"]), teacher_hash, *hashes]
        stage.seed(cfg.seed)
        student = build_model(cfg.student, data.input_shape, data.num_classes)
        check_module_indices(cfg.modules, len(student.stages), cfg.student)
        # The student's own stem and head: the modules' widths match each other directly.
        model = assemble(student, modules)
        assembled = evaluate(model, data.val, data.num_classes)
        result = fit(
            model,
            student_objective(stage, cfg, model, cfg.m2m_finetune.epochs),
            data.train,
            data.val,
            stage.fit_config(cfg.m2m_finetune, cfg.seed, {**section, "inputs": inputs}),
            num_classes=data.num_classes,
            on_epoch_end=stage.log_epoch(),
            label="m2m_assemble",
        )
        module_stages = [f"m2m@{i}" for i in cfg.modules]
        times = recorded_time_totals("meta", module_stages, stage.elapsed())
        stage.finish(
            model,
            result,
            arch=cfg.student,
            outputs=outputs("m2m"),
            extra_metrics={
                **combine_module_records(records),
                "assembled_val_acc": assembled["acc"],  # before end-to-end training
                "epoch_budget": cfg.m2m_epoch_budget(),
                "finetune_kd": cfg.finetune_kd,
                "seed": cfg.seed,
            },
            extra_run_record=times,
        )


if __name__ == "__main__":
    parser = stage_parser("m2m_assemble", __doc__ or "")
    sys.exit(run_stage("m2m_assemble", main, parser.parse_args()))
