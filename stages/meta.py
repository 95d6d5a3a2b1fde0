"""DVC stage `meta`: train the meta model of assembly.target end to end."""

from __future__ import annotations

import argparse
import sys

from kdflow.config import load_params
from stages._assembly import add_seed_argument, meta_outputs, params_section, stage_name
from stages._cli import run_stage, stage_parser


def main(args: argparse.Namespace) -> None:
    """Train the target's stem and head around one shallow block per module, briefly."""
    params = load_params(args.params)
    from kdflow.assembly import assembly_model_meta, build_meta_model, check_module_indices
    from kdflow.models import build_model
    from kdflow.train.teacher import cross_entropy_objective
    from kdflow.train.trainer import fit
    from stages._train import training_stage

    cfg, seed = params.assembly, args.seed
    section = {**params_section(cfg, "target", "modules", "meta"), "seed": seed}
    name = stage_name("meta", seed)
    with training_stage(name, params, section) as stage:
        data = stage.data
        stage.seed(seed)
        target = build_model(cfg.target, data.input_shape, data.num_classes)
        check_module_indices(cfg.modules, len(target.stages), cfg.target)
        model = build_meta_model(target)
        result = fit(
            model,
            cross_entropy_objective,
            data.train,
            data.val,
            stage.fit_config(cfg.meta, seed, section),
            num_classes=data.num_classes,
            on_epoch_end=stage.log_epoch(),
            label=name,
        )
        stage.finish(
            model,
            result,
            arch=cfg.target,
            outputs=meta_outputs(seed),
            extra_metrics={"seed": seed},
            extra_model_meta=assembly_model_meta("meta", model=model),
        )


if __name__ == "__main__":
    parser = stage_parser("meta", __doc__ or "")
    add_seed_argument(parser)
    sys.exit(run_stage("meta", main, parser.parse_args()))
