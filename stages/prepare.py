"""DVC stage `prepare`: source → validated train/val/test Parquet tables + meta.json."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from kdflow.config import load_params
from stages._cli import run_stage, stage_parser

OUT_DIR = Path("data/prepared")
METRICS = Path("metrics/prepare.json")
log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Prepare the configured data source and log the result to MLflow."""
    params = load_params(args.params)
    from kdflow.data.prepare import prepare
    from kdflow.io import json_text, staged_outputs, write_run_record
    from kdflow.tracking import flatten, stage_run

    started = time.perf_counter()
    with stage_run("prepare", params) as run:
        # The tables, meta.json, validation.json and the metrics appear together or not at all.
        with staged_outputs() as out:
            meta = prepare(params.data, OUT_DIR, out)
            metrics = {
                "rows": meta["rows"],
                "class_counts": meta["class_counts"],
                "validation": meta["validation"],
            }
            out.path(METRICS).write_text(json_text(metrics))
            seconds = round(time.perf_counter() - started, 2)
            write_run_record(out, "prepare", run.run_id, {"seconds": seconds})
        run.log_params(flatten(params.data.model_dump(exclude={"augment"}), "data."))
        run.log_metrics({f"rows_{s}": n for s, n in meta["rows"].items()} | {"seconds": seconds})
        run.set_tags({f"kdflow.output.{s}": h for s, h in meta["hashes"].items()})
        run.set_tags({"kdflow.validation": meta["validation"]})
        run.log_artifact(OUT_DIR / "validation.json", "validation")
        run.log_artifact(OUT_DIR / "meta.json")
    log.info(
        "prepare: %s: %s rows → %s (%.1f s)",
        params.data.source,
        "/".join(str(meta["rows"][s]) for s in ("train", "val", "test")),
        OUT_DIR,
        seconds,
    )


if __name__ == "__main__":
    parser = stage_parser("prepare", __doc__ or "")
    sys.exit(run_stage("prepare", main, parser.parse_args()))
