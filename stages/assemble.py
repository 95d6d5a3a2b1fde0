"""DVC stage `assemble`: the incubated modules in the meta stem and head, fine-tuned (§7.3)."""

from __future__ import annotations

import argparse
import sys

from kdflow.config import load_params
from stages._assembly import META, outputs, params_section
from stages._cli import run_stage, stage_parser


def main(args: argparse.Namespace) -> None:
    """Assemble the target from the meta model and the incubated modules, then fine-tune it."""
    params = load_params(args.params)
    from kdflow.assembly import assemble, check_module_indices, combine_module_records
    from kdflow.assembly.assemble import recorded_time_totals
    from kdflow.io import sha256_file
    from kdflow.models import build_model
    from kdflow.train.teacher import cross_entropy_objective
    from kdflow.train.trainer import evaluate, fit
    from stages._assembly import load_meta, load_modules
    from stages._train import training_stage

    cfg = params.assembly
    section = params_section(cfg, "target", "modules", "seed", "finetune")
    with training_stage("assemble", params, section) as stage:
        data = stage.data
        meta = load_meta(stage, cfg)
        loaded, hashes, records = load_modules(stage, cfg, "incubate", meta)
        modules = [hybrid.module for hybrid, _ in loaded]
        inputs = [sha256_file(META["model"]), *hashes]
        stage.seed(cfg.seed)
        target = build_model(cfg.target, data.input_shape, data.num_classes)
        check_module_indices(cfg.modules, len(target.stages), cfg.target)
        model = assemble(target, modules, stem=meta.stem, head=meta.head)
        assembled = evaluate(model, data.val, data.num_classes)
        result = fit(
            model,
            cross_entropy_objective,
            data.train,
            data.val,
            stage.fit_config(cfg.finetune, cfg.seed, {**section, "inputs": inputs}),
            num_classes=data.num_classes,
            on_epoch_end=stage.log_epoch(),
            label="assemble",
        )
        module_stages = [f"incubate@{i}" for i in cfg.modules]
        times = recorded_time_totals("meta", module_stages, stage.elapsed())
        stage.finish(
            model,
            result,
            arch=cfg.target,
            outputs=outputs("dma"),
            extra_metrics={
                **combine_module_records(records),
                "assembled_val_acc": assembled["acc"],  # before fine-tuning
                "epoch_budget": cfg.dma_epoch_budget(),
                "seed": cfg.seed,
            },
            extra_run_record=times,
        )


if __name__ == "__main__":
    parser = stage_parser("assemble", __doc__ or "")
    sys.exit(run_stage("assemble", main, parser.parse_args()))
