"""DVC stage `incubate`: train target module i inside the frozen meta model (ALGORITHMS §7.2)."""

from __future__ import annotations

import argparse
import sys

from kdflow.config import load_params
from stages._assembly import META, check_module_arg, outputs, params_section
from stages._cli import run_stage, stage_parser


def main(args: argparse.Namespace) -> None:
    """Incubate one module with CE; everything but the module stays frozen and in eval mode."""
    params = load_params(args.params)
    cfg = params.assembly
    check_module_arg(args.module, cfg)
    from kdflow.assembly import assembly_model_meta, check_module_indices, incubation_model
    from kdflow.io import sha256_file
    from kdflow.models import build_model
    from kdflow.train.teacher import cross_entropy_objective
    from kdflow.train.trainer import fit
    from stages._assembly import load_meta
    from stages._train import training_stage

    name = f"incubate@{args.module}"
    section = {
        **params_section(cfg, "target", "modules", "seed", "incubate"),
        "module": args.module,
    }
    with training_stage(name, params, section) as stage:
        data = stage.data
        meta = load_meta(stage, cfg)
        stage.seed(cfg.seed)
        target = build_model(cfg.target, data.input_shape, data.num_classes)
        check_module_indices(cfg.modules, len(target.stages), cfg.target)
        model = incubation_model(meta, target, args.module)
        key = {**section, "meta_model": sha256_file(META["model"])}
        result = fit(
            model,
            cross_entropy_objective,
            data.train,
            data.val,
            stage.fit_config(cfg.incubate, cfg.seed, key),
            num_classes=data.num_classes,
            on_epoch_end=stage.log_epoch(),
            label=name,
        )
        stage.finish(
            model,
            result,
            arch=cfg.target,
            outputs=outputs(f"incubate/{args.module}"),
            extra_metrics={"module": args.module},
            extra_model_meta=assembly_model_meta("incubate", module=args.module),
        )


if __name__ == "__main__":
    parser = stage_parser("incubate", __doc__ or "")
    parser.add_argument("--module", required=True, type=int, help="module index i (0-based)")
    sys.exit(run_stage("incubate", main, parser.parse_args()))
