"""DVC stage `incubate`: train target module i inside the frozen meta model."""

from __future__ import annotations

import argparse
import sys

from kdflow.config import load_params
from stages._assembly import (
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
    """Incubate one module with CE; module 0 trains the target's stem, module K−1 its head."""
    params = load_params(args.params)
    cfg, seed, i = params.assembly, args.seed, args.module
    check_module_arg(i, cfg)
    from kdflow.assembly import assembly_model_meta, check_module_indices, incubation_model
    from kdflow.io import sha256_file
    from kdflow.models import build_model
    from kdflow.train.teacher import cross_entropy_objective
    from kdflow.train.trainer import fit
    from stages._assembly import load_meta
    from stages._train import training_stage

    name = stage_name("incubate", seed, i)
    section = {
        **params_section(cfg, "target", "modules", "incubate"),
        "module": i,
        "seed": seed,
    }
    with training_stage(name, params, section) as stage:
        data = stage.data
        meta = load_meta(stage, cfg, seed)
        stage.seed(seed)
        target = build_model(cfg.target, data.input_shape, data.num_classes)
        check_module_indices(cfg.modules, len(target.stages), cfg.target)
        model = incubation_model(meta, target, i)
        key = {**section, "meta_model": sha256_file(meta_outputs(seed)["model"])}
        result = fit(
            model,
            cross_entropy_objective,
            data.train,
            data.val,
            stage.fit_config(cfg.incubate, seed, key),
            num_classes=data.num_classes,
            on_epoch_end=stage.log_epoch(),
            label=name,
        )
        stage.finish(
            model,
            result,
            arch=cfg.target,
            outputs=outputs(output_name("incubate", seed, i)),
            extra_metrics={"module": i, "seed": seed, "trains": model.trained_names()},
            extra_model_meta=assembly_model_meta("incubate", model=model, module=i),
        )


if __name__ == "__main__":
    parser = stage_parser("incubate", __doc__ or "")
    parser.add_argument("--module", required=True, type=int, help="module index i (0-based)")
    add_seed_argument(parser)
    sys.exit(run_stage("incubate", main, parser.parse_args()))
