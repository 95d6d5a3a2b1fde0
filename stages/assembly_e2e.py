"""DVC stages `dma_e2e`, `m2m_e2e`: the assembled models' end-to-end baselines (§7, §8).

Each trains its architecture from scratch for the total epochs of its modular counterpart
(DMA: meta + K × incubate + finetune; m2mKD: K × m2m + m2m_finetune), computed from params.
"""

from __future__ import annotations

import argparse
import sys

from kdflow.config import load_params
from stages._assembly import outputs, params_section
from stages._cli import run_stage, stage_parser


def main(args: argparse.Namespace) -> None:
    """Train the DMA target or the m2mKD student end to end with the matching epoch budget."""
    params = load_params(args.params)
    from kdflow.assembly import check_module_indices
    from kdflow.models import build_model
    from kdflow.train.teacher import cross_entropy_objective
    from kdflow.train.trainer import fit
    from stages._assembly import student_objective
    from stages._train import training_stage

    cfg = params.assembly
    name = f"{args.baseline}_e2e"
    if args.baseline == "dma":
        arch, optim = cfg.target, cfg.dma_e2e_optim()
        section = params_section(cfg, "target", "modules", "seed", "e2e")
    else:
        arch, optim = cfg.student, cfg.m2m_e2e_optim()
        keys = ("student", "modules", "seed", "alpha", "tau", "finetune_kd", "e2e")
        section = params_section(cfg, *keys)
    section["epochs"] = optim.epochs
    with training_stage(name, params, section) as stage:
        data = stage.data
        stage.seed(cfg.seed)
        model = build_model(arch, data.input_shape, data.num_classes)
        # The budget counts K modules: K must be the model's.
        check_module_indices(cfg.modules, len(model.stages), arch)
        objective = (
            cross_entropy_objective
            if args.baseline == "dma"
            else student_objective(stage, cfg, model, optim.epochs)
        )
        result = fit(
            model,
            objective,
            data.train,
            data.val,
            stage.fit_config(optim, cfg.seed, section),
            num_classes=data.num_classes,
            on_epoch_end=stage.log_epoch(),
            label=name,
        )
        extra = {"epoch_budget": optim.epochs, "seed": cfg.seed}
        if args.baseline == "m2m":
            extra["finetune_kd"] = cfg.finetune_kd
        stage.finish(model, result, arch=arch, outputs=outputs(name), extra_metrics=extra)


if __name__ == "__main__":
    parser = stage_parser("assembly_e2e", __doc__ or "")
    parser.add_argument("--baseline", required=True, choices=["dma", "m2m"])
    arguments = parser.parse_args()
    sys.exit(run_stage(f"{arguments.baseline}_e2e", main, arguments))
