"""DVC stage `teacher_mll`: train the teacher by maximum likelihood (cross-entropy)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdflow.config import load_params
from stages._cli import run_stage, stage_parser

OUTPUTS = {
    "model": Path("models/teacher/mll.pt"),
    "metrics": Path("metrics/teacher/mll.json"),
    "plots": Path("plots/teacher/mll.tsv"),
}


def main(args: argparse.Namespace) -> None:
    """Train the MLL teacher and write its model, metrics and per-epoch plot."""
    params = load_params(args.params)
    from kdflow.models import build_model
    from kdflow.train.teacher import cross_entropy_objective
    from kdflow.train.trainer import fit
    from stages._train import training_stage

    teacher = params.teacher
    with training_stage("teacher_mll", params, {"teacher": teacher.model_dump()}) as stage:
        stage.seed(teacher.seed)
        model = build_model(teacher.model, stage.data.input_shape, stage.data.num_classes)
        result = fit(
            model,
            cross_entropy_objective,
            stage.data.train,
            stage.data.val,
            stage.fit_config(teacher.optim, teacher.seed, {"teacher": teacher.model_dump()}),
            num_classes=stage.data.num_classes,
            augment=stage.augment(),
            on_epoch_end=stage.log_epoch(),
            label="teacher_mll",
        )
        stage.finish(model, result, arch=teacher.model, outputs=OUTPUTS)


if __name__ == "__main__":
    parser = stage_parser("teacher_mll", __doc__ or "")
    sys.exit(run_stage("teacher_mll", main, parser.parse_args()))
