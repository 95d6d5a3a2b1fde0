"""DVC stages `dma_e2e`, `m2m_e2e`, `dma_scratch`, `m2m_scratch`: the assembled models' baselines.

Each trains its architecture (the DMA target, the m2mKD student) from scratch, with one of
two epoch budgets:

- `--budget total` (`*_e2e`): the total epochs of its modular counterpart, with the `e2e`
  settings (DMA: meta + K × incubate + finetune; m2mKD: K × m2m + m2m_finetune);
- `--budget finetune` (`*_scratch`): only the fine-tune's epochs, with the fine-tune's own
  settings (`finetune`, `m2m_finetune`, and KD when finetune_kd): the assembled model's
  fine-tune run from a fresh initialisation instead of the trained modules.
"""

from __future__ import annotations

import argparse
import sys

from kdflow.config import load_params
from stages._assembly import add_seed_argument, output_name, outputs, params_section, stage_name
from stages._cli import run_stage, stage_parser

SUFFIX = {"total": "e2e", "finetune": "scratch"}


def main(args: argparse.Namespace) -> None:
    """Train the DMA target or the m2mKD student from scratch with the chosen epoch budget."""
    params = load_params(args.params)
    from kdflow.assembly import check_module_indices
    from kdflow.models import build_model
    from kdflow.train.teacher import cross_entropy_objective
    from kdflow.train.trainer import fit
    from stages._assembly import student_objective
    from stages._train import training_stage

    cfg, seed = params.assembly, args.seed
    kind = f"{args.baseline}_{SUFFIX[args.budget]}"
    total = args.budget == "total"
    if args.baseline == "dma":
        arch = cfg.target
        optim = cfg.dma_e2e_optim() if total else cfg.finetune
        section = params_section(cfg, "target", "modules", "e2e" if total else "finetune")
    else:
        arch = cfg.student
        optim = cfg.m2m_e2e_optim() if total else cfg.m2m_finetune
        keys = ("student", "modules", "alpha", "tau", "finetune_kd")
        section = params_section(cfg, *keys, "e2e" if total else "m2m_finetune")
    section |= {"epochs": optim.epochs, "seed": seed}
    name = stage_name(kind, seed)
    with training_stage(name, params, section) as stage:
        data = stage.data
        stage.seed(seed)
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
            stage.fit_config(optim, seed, section),
            num_classes=data.num_classes,
            on_epoch_end=stage.log_epoch(),
            label=name,
        )
        extra = {"epoch_budget": optim.epochs, "budget": args.budget, "seed": seed}
        if args.baseline == "m2m":
            extra["finetune_kd"] = cfg.finetune_kd
        stage.finish(
            model, result, arch=arch, outputs=outputs(output_name(kind, seed)), extra_metrics=extra
        )


if __name__ == "__main__":
    parser = stage_parser("assembly_e2e", __doc__ or "")
    parser.add_argument("--baseline", required=True, choices=["dma", "m2m"])
    parser.add_argument(
        "--budget",
        choices=sorted(SUFFIX),
        default="total",
        help="total: the modular run's total epochs (*_e2e); finetune: its fine-tune's "
        "epochs and settings (*_scratch); default %(default)s",
    )
    add_seed_argument(parser)
    arguments = parser.parse_args()
    kind = f"{arguments.baseline}_{SUFFIX[arguments.budget]}"
    sys.exit(run_stage(kind, main, arguments))
