"""DVC stage `m2m_assemble`: chain the distilled student modules and train end to end."""

from __future__ import annotations

import argparse
import sys

from kdflow.config import load_params
from stages._assembly import (
    TEACHER,
    add_seed_argument,
    meta_outputs,
    output_name,
    outputs,
    params_section,
    stage_name,
)
from stages._cli import run_stage, stage_parser


def main(args: argparse.Namespace) -> None:
    """Put the m2mKD modules (stitches dropped) into the student, score it, then train it."""
    params = load_params(args.params)
    from kdflow.assembly import assemble, check_module_indices, combine_module_records
    from kdflow.assembly.assemble import recorded_time_totals
    from kdflow.errors import KdflowError
    from kdflow.io import sha256_file
    from kdflow.models import build_model
    from kdflow.train.trainer import fit
    from stages._assembly import assembled_accuracy, load_meta, load_modules, student_objective
    from stages._train import training_stage

    cfg, seed = params.assembly, args.seed
    keys = ("target", "student", "modules", "alpha", "tau", "finetune_kd", "m2m_finetune")
    section = {**params_section(cfg, *keys), "seed": seed}
    name = stage_name("m2m_assemble", seed)
    with training_stage(name, params, section) as stage:
        data = stage.data
        # The meta model is read only to check that every pair was trained inside it.
        meta = load_meta(stage, cfg, seed)
        loaded, hashes, records = load_modules(stage, cfg, "m2m", meta, seed)
        for i, (_, pair_meta) in zip(cfg.modules, loaded, strict=True):
            if pair_meta["assembly"]["student"] != cfg.student:
                raise KdflowError(
                    f"{outputs(output_name('m2m', seed, i))['model']} holds a module of "
                    f"{pair_meta['assembly']['student']!r}, not assembly.student "
                    f"{cfg.student!r}; rerun {stage_name('m2m', seed, i)}"
                )
        teacher_hash = sha256_file(TEACHER) if cfg.finetune_kd else ""
        inputs = [sha256_file(meta_outputs(seed)["model"]), teacher_hash, *hashes]
        stage.seed(seed)
        student = build_model(cfg.student, data.input_shape, data.num_classes)
        check_module_indices(cfg.modules, len(student.stages), cfg.student)
        # Pair 0 brings the student's stem, pair K−1 its head; the stitches stay behind,
        # since the student's modules match each other's widths directly.
        model = assemble(student, [pair for pair, _ in loaded])
        before = assembled_accuracy(stage, model)
        result = fit(
            model,
            student_objective(stage, cfg, model, cfg.m2m_finetune.epochs),
            data.train,
            data.val,
            stage.fit_config(cfg.m2m_finetune, seed, {**section, "inputs": inputs}),
            num_classes=data.num_classes,
            on_epoch_end=stage.log_epoch(),
            label=name,
        )
        module_stages = [stage_name("m2m", seed, i) for i in cfg.modules]
        times = recorded_time_totals(stage_name("meta", seed), module_stages, stage.elapsed())
        stage.finish(
            model,
            result,
            arch=cfg.student,
            outputs=outputs(output_name("m2m", seed)),
            extra_metrics={
                **combine_module_records(records),
                **before,
                "epoch_budget": cfg.m2m_epoch_budget(),
                "finetune_epochs": cfg.m2m_finetune.epochs,
                "finetune_kd": cfg.finetune_kd,
                "seed": seed,
            },
            extra_run_record=times,
        )


if __name__ == "__main__":
    parser = stage_parser("m2m_assemble", __doc__ or "")
    add_seed_argument(parser)
    sys.exit(run_stage("m2m_assemble", main, parser.parse_args()))
