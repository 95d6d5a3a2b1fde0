"""DVC stage `evaluate`: every model of the params grid on the test split → metrics/eval.json."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from kdflow.config import load_params
from stages._cli import run_stage, stage_parser

METRICS = Path("metrics/eval.json")
VALIDATION_DIR = Path("reports/validation")
VALIDATION = VALIDATION_DIR / "eval.json"
log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Evaluate the grid's models with one code path and validate them with Great Expectations.

    Reads distill.teachers, distill.methods, distill.protocols and distill.seeds only.
    """
    params = load_params(args.params)
    import polars as pl

    from kdflow.data.tensors import load_prepared
    from kdflow.evaluation import evaluate_model, find_models, grid_models, validate_evaluation
    from kdflow.io import json_text, staged_outputs, write_run_record
    from kdflow.tracking import stage_run
    from kdflow.train.checkpoint import data_fingerprint

    started = time.perf_counter()
    cfg = params.distill
    names = grid_models(cfg.teachers, cfg.methods, cfg.protocols, cfg.seeds, params.assembly.seeds)
    data = load_prepared("data/prepared")
    entries = find_models(Path("models"), Path("metrics"), names)
    with stage_run("evaluate", params, {"data": data_fingerprint(data.meta)}) as run:
        records, predictions = [], []
        for entry in entries:
            record, frame = evaluate_model(entry, data)
            records.append(record)
            predictions.append(frame)
        validated = time.perf_counter()
        report = validate_evaluation(pl.concat(predictions), records, data.num_classes)
        timing = {
            "validation_seconds": round(time.perf_counter() - validated, 2),
            "seconds": round(time.perf_counter() - started, 2),
        }
        metrics = {
            "models": {r["name"]: r for r in records},
            "num_models": len(records),
            "validation": "passed",
        }
        with staged_outputs() as out:
            (out.dir(VALIDATION_DIR) / VALIDATION.name).write_text(json_text(report))
            out.path(METRICS).write_text(json_text(metrics))
            write_run_record(out, "evaluate", run.run_id, timing)
        run.log_metrics({"num_models": len(records), **timing})
        run.set_tags({"kdflow.validation": "passed"})
        run.log_artifact(VALIDATION, "validation")
        run.log_artifact(METRICS)
    log.info(
        "evaluate: %d models, Great Expectations %.1f s, total %.1f s",
        len(records),
        timing["validation_seconds"],
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    parser = stage_parser("evaluate", __doc__ or "")
    sys.exit(run_stage("evaluate", main, parser.parse_args()))
