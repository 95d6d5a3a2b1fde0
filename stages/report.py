"""DVC stage `report`: metrics/eval.json and the stage metrics → reports/report.md and .html."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from kdflow.config import load_params
from stages._cli import run_stage, stage_parser

REPORTS = Path("reports")
log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    from kdflow.io import sha256_file

    return sha256_file(path)


def main(args: argparse.Namespace) -> None:
    """Build the report's Markdown, HTML and figures atomically."""
    params = load_params(args.params)
    import markdown

    from kdflow.config import params_hash
    from kdflow.data.tensors import read_meta
    from kdflow.errors import KdflowError
    from kdflow.io import atomic_dir, atomic_path
    from kdflow.report.build import build_report
    from kdflow.tracking import lineage_tags, stage_run

    eval_path = Path("metrics/eval.json")
    if not eval_path.is_file():
        raise KdflowError(f"{eval_path} not found; run the evaluate stage first")
    evaluation = json.loads(eval_path.read_text())
    records = list(evaluation["models"].values())
    runs = {}
    for record in records:
        kind, name = record["name"].split("/")
        stage_metrics = json.loads(Path(f"metrics/{kind}/{name}.json").read_text())
        runs[record["name"]] = stage_metrics.get("mlflow_run_id", "unknown")
    tags = lineage_tags("report", params, {}, Path("."))
    provenance = {
        "git_commit": tags["kdflow.git_commit"],
        "params_hash": params_hash(params),
        "runs": runs,
    }
    with stage_run("report", params, {"eval": _sha256(eval_path)}) as run:
        with atomic_dir(REPORTS / "figures") as figures:
            text = build_report(
                records,
                meta=read_meta("data/prepared"),
                params=params.model_dump(by_alias=True),
                provenance=provenance,
                figures=figures,
            )
            # Every evaluated model must appear; otherwise nothing is written.
            missing = [name for name in runs if name not in text]
            if missing:
                raise KdflowError(f"report lacks models {missing[:3]}; not written")
        html = markdown.markdown(text, extensions=["tables"])
        with atomic_path(REPORTS / "report.html") as tmp:
            tmp.write_text(
                "<!doctype html><meta charset='utf-8'><title>kdflow report</title>"
                "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
                "table{border-collapse:collapse}"
                "td,th{border:1px solid #ccc;padding:2px 6px}</style>" + html
            )
        with atomic_path(REPORTS / "report.md") as tmp:
            tmp.write_text(text)
        run.set_tags({"kdflow.validation": "passed"})
        run.log_artifact(REPORTS / "report.md")
    log.info("report: %s", (REPORTS / "report.md").resolve())


if __name__ == "__main__":
    parser = stage_parser("report", __doc__ or "")
    sys.exit(run_stage("report", main, parser.parse_args()))
