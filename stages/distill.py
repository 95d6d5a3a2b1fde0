"""DVC stage `distill`: train one student (teacher × method × protocol × seed)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kdflow.config import load_params
from kdflow.errors import KdflowError
from kdflow.losses import METHODS
from kdflow.train.grid import NO_TEACHER, PROTOCOLS, TEACHERS
from stages._cli import run_stage, stage_parser

log = logging.getLogger(__name__)


def run_name(teacher: str, method: str, protocol: str, seed: int) -> str:
    """Return the output name `<teacher>-<method>-<protocol>-s<seed>`."""
    return f"{teacher}-{method}-{protocol}-s{seed}"


def main(args: argparse.Namespace) -> None:
    """Train the student named by the arguments and write its model and metrics."""
    params = load_params(args.params)
    cfg = params.distill
    if (args.teacher == NO_TEACHER) != (args.method == "none"):
        raise KdflowError("--teacher none goes with --method none (the no-teacher baseline)")

    from kdflow.losses import METHODS
    from kdflow.metrics import omitted_accuracy
    from kdflow.models import build_model
    from kdflow.train.checkpoint import data_expectations, load_model
    from kdflow.train.distill import PeerGroup, build_objective, subset_hash, without_classes
    from kdflow.train.protocols import check_subset, protocol_indices
    from kdflow.train.trainer import best_val_accuracy, fit, last_epoch, predict
    from stages._train import training_stage

    name = run_name(args.teacher, args.method, args.protocol, args.seed)
    stage_name = f"distill@{name}"
    # Exactly the params keys dvc.yaml declares for this student: a key of another method or
    # protocol, or the grid's lists, must not change its run key or its model file.
    protocol_settings = getattr(cfg.protocol_params, args.protocol).model_dump()
    method_settings = cfg.method_settings(args.method) if args.method != "none" else {}
    section = {
        "distill": {
            "student": cfg.student,
            "select": cfg.select,
            "cache_teacher": cfg.cache_teacher,
            "optim": cfg.optim.model_dump(),
            "method_params": {args.method: method_settings},
            "protocol_params": {args.protocol: protocol_settings},
        },
        "teacher": args.teacher,
        "method": args.method,
        "protocol": args.protocol,
        "seed": args.seed,
        "augment": params.data.augment,
        "runtime": params.runtime.model_dump(),
    }
    fraction = protocol_settings.get("fraction", 1.0)
    omit = protocol_settings.get("omit", [])
    with training_stage(stage_name, params, section) as stage:
        data = stage.data
        bad = [c for c in omit if not 0 <= c < data.num_classes]
        if bad:
            raise KdflowError(
                f"distill.protocol_params.zeroshot.omit {bad}: class index out of range; "
                f"this data has classes 0..{data.num_classes - 1}"
            )
        if len(set(omit)) >= data.num_classes:
            raise KdflowError(
                f"distill.protocol_params.zeroshot.omit {omit} omits every class of this data; "
                "keep at least one class to train on"
            )
        method_cls = METHODS.get(args.method)
        teacher = None
        if method_cls.needs_teacher:
            teacher, _ = load_model(
                Path(f"models/teacher/{args.teacher}.pt"),
                expect=data_expectations(data.meta),
                device=stage.device,
            )
            teacher.eval()

        index = protocol_indices(
            args.protocol,
            data.train.y,
            fraction=fraction,
            omit=omit,
            seed=args.seed,
        )
        train = data.train.subset(index)
        checks = check_subset(
            args.protocol,
            train.y,
            data.train.y,
            data.num_classes,
            fraction=fraction,
            omit=omit,
        )
        # Selection must not see the omitted classes either.
        val = without_classes(data.val, omit)

        stage.seed(args.seed)
        students = [
            build_model(cfg.student, data.input_shape, data.num_classes).to(stage.device)
            for _ in range(method_cls.num_students)
        ]
        augment = stage.augment()
        if teacher is not None and cfg.cache_teacher and augment is not None:
            log.info("teacher outputs not cached: data.augment changes every batch")
        objective = build_objective(
            args.method,
            students,
            teacher,
            train,
            epochs=cfg.optim.epochs,
            cache_teacher=cfg.cache_teacher and augment is None,
            settings=method_settings,
        )
        model = PeerGroup(students) if len(students) > 1 else students[0]
        result = fit(
            model,
            objective,
            train,
            val,
            stage.fit_config(cfg.optim, args.seed, section),
            num_classes=data.num_classes,
            extra=objective.method,
            select=last_epoch if cfg.select == "last" else best_val_accuracy,
            augment=augment,
            on_epoch_end=stage.log_epoch(),
            label=stage_name,
        )
        model.load_state_dict(result.best_state)
        extra = {
            "teacher": args.teacher,
            "method": args.method,
            "protocol": args.protocol,
            "seed": args.seed,
            "train_size": len(train),
            # Students of different teachers with the same seed must share this subset.
            "subset_hash": subset_hash(train),
            "subset_checks": len(checks),
        }
        if args.protocol == "zeroshot":
            logits = predict(students[0], data.test)
            extra["omitted_acc"] = omitted_accuracy(logits, data.test.y, omit)
            extra["omit"] = omit
        stage.finish(
            students[0],
            result,
            arch=cfg.student,
            outputs={
                "model": Path(f"models/distill/{name}.pt"),
                "metrics": Path(f"metrics/distill/{name}.json"),
                "plots": Path(f"plots/distill/{name}.tsv"),
            },
            extra_metrics=extra,
            selected_state=False,
        )


if __name__ == "__main__":
    parser = stage_parser("distill", __doc__ or "")
    parser.add_argument(
        "--teacher",
        required=True,
        choices=[*TEACHERS, NO_TEACHER],
        help=f"the teacher to learn from, or {NO_TEACHER} for the no-teacher baseline",
    )
    parser.add_argument(
        "--method",
        required=True,
        choices=METHODS.names(),
        help="a registered distillation method (none: the no-teacher baseline)",
    )
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS, help="training protocol")
    parser.add_argument("--seed", required=True, type=int, help="seed of the subset and the init")
    sys.exit(run_stage("distill", main, parser.parse_args()))
