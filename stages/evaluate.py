"""DVC stage `evaluate`: every trained model on the test split → metrics/eval.json."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from kdflow.config import load_params
from stages._cli import run_stage, stage_parser

METRICS = Path("metrics/eval.json")
VALIDATION = Path("reports/validation/eval.json")
log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Evaluate all models with one code path and validate the results with Great Expectations."""
    params = load_params(args.params)
    import polars as pl

    from kdflow.data.tensors import load_prepared
    from kdflow.evaluation import evaluate_model, find_models, validate_evaluation
    from kdflow.io import write_json
    from kdflow.tracking import stage_run
    from kdflow.train.checkpoint import data_fingerprint

    started = time.perf_counter()
    data = load_prepared("data/prepared")
    entries = find_models(Path("models"), Path("metrics"))
    with stage_run("evaluate", params, {"data": data_fingerprint(data.meta)}) as run:
        records, predictions = [], []
        for entry in entries:
            record, frame = evaluate_model(entry, data)
            records.append(record)
            predictions.append(frame)
        validated = time.perf_counter()
        report = validate_evaluation(pl.concat(predictions), records, data.num_classes)
        validation_seconds = round(time.perf_counter() - validated, 2)
        write_json(VALIDATION, report)
        write_json(
            METRICS,
            {
                "models": {r["name"]: r for r in records},
                "num_models": len(records),
                "validation": "passed",
                "validation_seconds": validation_seconds,
                "mlflow_run_id": run.run_id,
            },
        )
        run.log_metrics({"num_models": len(records), "validation_seconds": validation_seconds})
        run.set_tags({"kdflow.validation": "passed"})
        run.log_artifact(VALIDATION, "validation")
        run.log_artifact(METRICS)
    log.info(
        "evaluate: %d models, Great Expectations %.1f s, total %.1f s",
        len(records),
        validation_seconds,
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    parser = stage_parser("evaluate", __doc__ or "")
    sys.exit(run_stage("evaluate", main, parser.parse_args()))
