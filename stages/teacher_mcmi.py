"""DVC stage `teacher_mcmi`: fine-tune the MLL teacher into an MCMI teacher (docs/algorithms.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdflow.config import load_params
from stages._cli import run_stage, stage_parser

MLL_MODEL = Path("models/teacher/mll.pt")
OUTPUTS = {
    "model": Path("models/teacher/mcmi.pt"),
    "metrics": Path("metrics/teacher/mcmi.json"),
    "plots": Path("plots/teacher/mcmi.tsv"),
}


def main(args: argparse.Namespace) -> None:
    """Fine-tune the MLL teacher with CE − λ·CMI and keep the epoch the selection rule picks."""
    params = load_params(args.params)
    from kdflow.io import sha256_file
    from kdflow.train.checkpoint import data_expectations, load_model
    from kdflow.train.teacher import (
        build_mcmi_objective,
        cmi_within_accuracy,
        compute_centroids,
    )
    from kdflow.train.trainer import best_val_accuracy, evaluate, fit
    from stages._train import training_stage

    mcmi = params.mcmi
    section = {"mcmi": mcmi.model_dump(by_alias=True)}
    with training_stage("teacher_mcmi", params, section) as stage:
        data = stage.data
        stage.seed(params.teacher.seed)
        model, meta = load_model(
            MLL_MODEL,
            expect=data_expectations(data.meta),
            device=stage.device,
        )
        start = evaluate(model, data.val, data.num_classes)
        objective, centroid_split, train = build_mcmi_objective(
            model, data, mcmi, params.teacher.seed
        )

        def refresh_centroids(epoch: int) -> None:
            if mcmi.centroid_refresh == "epoch" and epoch > 0:
                objective.centroids = compute_centroids(model, centroid_split, data.num_classes)

        select = (
            cmi_within_accuracy(start["acc"], mcmi.max_acc_drop)
            if mcmi.select == "cmi_within_acc"
            else best_val_accuracy
        )
        key = {**section, "mll_model": sha256_file(MLL_MODEL)}
        result = fit(
            model,
            objective,
            train,
            data.val,
            stage.fit_config(mcmi.optim, params.teacher.seed, key),
            num_classes=data.num_classes,
            select=select,
            augment=stage.augment(),
            on_epoch_start=refresh_centroids,
            on_epoch_end=stage.log_epoch(),
            label="teacher_mcmi",
        )
        stage.finish(
            model,
            result,
            arch=meta["arch"],
            outputs=OUTPUTS,
            extra_metrics={"start_val_acc": start["acc"], "start_val_cmi": start["cmi"]},
        )


if __name__ == "__main__":
    parser = stage_parser("teacher_mcmi", __doc__ or "")
    sys.exit(run_stage("teacher_mcmi", main, parser.parse_args()))
