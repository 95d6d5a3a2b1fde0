"""DVC stage `assemble`: chain the incubated modules into the target and fine-tune it."""

from __future__ import annotations

import argparse
import sys

from kdflow.config import load_params
from stages._assembly import (
    add_seed_argument,
    meta_outputs,
    output_name,
    outputs,
    params_section,
    stage_name,
)
from stages._cli import run_stage, stage_parser


def main(args: argparse.Namespace) -> None:
    """Assemble the target from the incubated modules alone, score it, then fine-tune it."""
    params = load_params(args.params)
    from kdflow.assembly import assemble, check_module_indices, combine_module_records
    from kdflow.assembly.assemble import recorded_time_totals
    from kdflow.io import sha256_file
    from kdflow.models import build_model
    from kdflow.train.teacher import cross_entropy_objective
    from kdflow.train.trainer import fit
    from stages._assembly import assembled_accuracy, load_meta, load_modules
    from stages._train import training_stage

    cfg, seed = params.assembly, args.seed
    section = {**params_section(cfg, "target", "modules", "finetune"), "seed": seed}
    name = stage_name("assemble", seed)
    with training_stage(name, params, section) as stage:
        data = stage.data
        # The meta model is read only to check that every module was trained inside it.
        meta = load_meta(stage, cfg, seed)
        loaded, hashes, records = load_modules(stage, cfg, "incubate", meta, seed)
        inputs = [sha256_file(meta_outputs(seed)["model"]), *hashes]
        stage.seed(seed)
        target = build_model(cfg.target, data.input_shape, data.num_classes)
        check_module_indices(cfg.modules, len(target.stages), cfg.target)
        # Module 0 brings the stem, module K−1 the head: no part is fresh or the meta model's.
        model = assemble(target, [hybrid for hybrid, _ in loaded])
        before = assembled_accuracy(stage, model)
        result = fit(
            model,
            cross_entropy_objective,
            data.train,
            data.val,
            stage.fit_config(cfg.finetune, seed, {**section, "inputs": inputs}),
            num_classes=data.num_classes,
            on_epoch_end=stage.log_epoch(),
            label=name,
        )
        module_stages = [stage_name("incubate", seed, i) for i in cfg.modules]
        times = recorded_time_totals(stage_name("meta", seed), module_stages, stage.elapsed())
        stage.finish(
            model,
            result,
            arch=cfg.target,
            outputs=outputs(output_name("dma", seed)),
            extra_metrics={
                **combine_module_records(records),
                **before,
                "epoch_budget": cfg.dma_epoch_budget(),
                "finetune_epochs": cfg.finetune.epochs,
                "seed": seed,
            },
            extra_run_record=times,
        )


if __name__ == "__main__":
    parser = stage_parser("assemble", __doc__ or "")
    add_seed_argument(parser)
    sys.exit(run_stage("assemble", main, parser.parse_args()))
