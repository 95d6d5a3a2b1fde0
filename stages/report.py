"""DVC stage `report`: metrics/eval.json → reports/report.md, .html, figures, metrics/summary.json.

Also reads the evaluated students' per-epoch tables (plots/distill) for the learning curves
and writes them as reports/curves.tsv. Reads the params keys distill.student, distill.select,
distill.protocols, distill.protocol_params.fewshot.fraction and teacher.model, nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from kdflow.config import load_params
from stages._cli import run_stage, stage_parser

REPORTS = Path("reports")
EVAL = Path("metrics/eval.json")
SUMMARY = Path("metrics/summary.json")
PLOTS = Path("plots")
log = logging.getLogger(__name__)
HTML_HEAD = (
    "<!doctype html><meta charset='utf-8'><title>kdflow report</title>"
    "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
    "table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 6px}</style>"
)


def main(args: argparse.Namespace) -> None:
    """Build the report's Markdown, HTML, figures and summary; all appear together or none."""
    params = load_params(args.params)
    import markdown

    from kdflow.config import params_hash
    from kdflow.data.tensors import read_meta
    from kdflow.errors import KdflowError
    from kdflow.io import json_text, sha256_file, staged_outputs, write_run_record
    from kdflow.report.build import build_report
    from kdflow.report.curves import curves_tsv, student_curves
    from kdflow.report.tables import summary
    from kdflow.tracking import stage_run

    started = time.perf_counter()
    if not EVAL.is_file():
        raise KdflowError(f"{EVAL} not found; run the evaluate stage first")
    records = list(json.loads(EVAL.read_text())["models"].values())
    distill = params.distill
    settings = {
        "distill": {
            "student": distill.student,
            "select": distill.select,
            "protocols": list(distill.protocols),
            "fewshot_fraction": distill.fewshot_fraction,
        },
        "teacher": {"model": params.teacher.model},
    }
    curves = student_curves(records, PLOTS)
    with stage_run("report", params, {"eval": sha256_file(EVAL)}) as run:
        with staged_outputs() as out:
            text = build_report(
                records,
                meta=read_meta("data/prepared"),
                params=settings,
                provenance={"params_hash": params_hash(settings)},
                figures=out.dir(REPORTS / "figures"),
                curves=curves,
            )
            # Every evaluated model must appear; otherwise nothing is written.
            missing = [r["name"] for r in records if r["name"] not in text]
            if missing:
                raise KdflowError(f"report lacks models {missing[:3]}; not written")
            html = markdown.markdown(text, extensions=["tables"])
            out.path(REPORTS / "report.html").write_text(HTML_HEAD + html)
            out.path(REPORTS / "report.md").write_text(text)
            out.path(SUMMARY).write_text(json_text(summary(records)))
            out.path(REPORTS / "curves.tsv").write_text(curves_tsv(curves))
            seconds = round(time.perf_counter() - started, 2)
            write_run_record(out, "report", run.run_id, {"seconds": seconds})
        run.log_metrics({"seconds": seconds})
        run.set_tags({"kdflow.validation": "passed"})
        run.log_artifact(REPORTS / "report.md")
        run.log_artifact(SUMMARY)
    log.info("report: %s", (REPORTS / "report.md").resolve())


if __name__ == "__main__":
    parser = stage_parser("report", __doc__ or "")
    sys.exit(run_stage("report", main, parser.parse_args()))
