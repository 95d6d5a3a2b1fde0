"""What data validation costs each stage: every check a stage runs, timed on the default data.

Run after `dvc repro` (it reads data/prepared and the trained models):

    .venv/bin/python benchmarks/validation_overhead.py

Timed, each as the stage runs it (median of `--repeat` runs after one warm-up):
- inputs: the sha256 of the three prepared tables against meta.json (every training stage),
  the checkpoint metadata check of a teacher (students and MCMI), the few-shot and omitted-class
  subset checks (students);
- outputs: finite logits and probabilities summing to 1 on val and test, metrics ranges and
  keys (every training stage);
- Great Expectations: the prepare suite over the three tables (once, in `prepare`) and the
  evaluate suites over every prediction and record (once, in `evaluate`), each in a fresh
  process so its import is counted, as it is in the pipeline.
The last lines give the per-student-stage total and the whole default pipeline's total.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kdflow.config import load_params
from kdflow.data.tensors import load_prepared
from kdflow.io import sha256_file
from kdflow.metrics import summarize
from kdflow.train.checkpoint import data_fingerprint, load_model
from kdflow.train.outputs import check_logits, check_metrics
from kdflow.train.protocols import check_subset, protocol_indices
from kdflow.train.trainer import predict

PREPARED = Path("data/prepared")

GE_PREPARE = """
import time, polars as pl, json
t = time.perf_counter()
from kdflow.data.validation import validate_tables
meta = json.load(open("data/prepared/meta.json"))
tables = {s: pl.read_parquet(f"data/prepared/{s}.parquet") for s in ("train", "val", "test")}
length = 1
for d in meta["input_shape"]:
    length *= d
dtype = str(tables["train"].schema["x"].inner)
validate_tables(tables, meta["num_classes"], length, dtype)
print(time.perf_counter() - t)
"""

# The evaluate suites over as many prediction rows as the default pipeline writes (synthetic
# rows: the suite's cost depends on their number, not their values).
GE_EVALUATE = """
import time, json, polars as pl
t = time.perf_counter()
from kdflow.evaluation import validate_evaluation
records = list(json.load(open("metrics/eval.json"))["models"].values())
rows = 1000 * len(records)
predictions = pl.DataFrame({
    "model": [r["name"] for r in records for _ in range(1000)],
    "sample_id": list(range(1000)) * len(records),
    "label": [i % 10 for i in range(rows)], "pred": [i % 10 for i in range(rows)],
    "max_prob": [0.9] * rows, "prob_sum": [1.0] * rows,
})
validate_evaluation(predictions, records, 10)
print(time.perf_counter() - t)
"""


def median_seconds(check: Callable[[], object], repeat: int) -> float:
    """Return the median wall time of `check` over `repeat` runs, after one warm-up run."""
    check()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        check()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def in_fresh_process(code: str) -> float:
    """Return the seconds a snippet reports for itself in a new interpreter (imports included)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Time every check and print one JSON line each, then the totals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    params = load_params("params.yaml")
    data = load_prepared(PREPARED)
    meta = data.meta
    cfg = params.distill
    teacher, _ = load_model("models/teacher/mll.pt")
    val_logits, test_logits = predict(teacher, data.val.x), predict(teacher, data.test.x)
    metrics = {f"test_{k}": v for k, v in summarize(test_logits, data.test.y, 10).items()}
    metrics["per_class_acc"] = metrics.pop("test_per_class_acc")
    subsets = {
        p: data.train.y[
            protocol_indices(p, data.train.y, fraction=cfg.fewshot_fraction, omit=cfg.omit, seed=0)
        ]
        for p in ("fewshot", "zeroshot")
    }

    def subset_check(protocol: str) -> Callable[[], object]:
        return lambda: check_subset(
            protocol,
            subsets[protocol],
            data.train.y,
            data.num_classes,
            fraction=cfg.fewshot_fraction,
            omit=cfg.omit,
        )

    checks: dict[str, Callable[[], object]] = {
        "input table hashes": lambda: [
            sha256_file(PREPARED / f"{s}.parquet") for s in ("train", "val", "test")
        ],
        "teacher checkpoint metadata": lambda: load_model(
            "models/teacher/mll.pt",
            expect={"data_hash": data_fingerprint(meta), "num_classes": data.num_classes},
        ),
        "few-shot subset": subset_check("fewshot"),
        "omitted-class subset": subset_check("zeroshot"),
        "output logits (val + test)": lambda: (
            check_logits(val_logits, "val"),
            check_logits(test_logits, "test"),
        ),
        "output metrics": lambda: check_metrics(metrics, data.num_classes, "metrics.json"),
    }
    seconds = {name: median_seconds(check, args.repeat) for name, check in checks.items()}
    for name, value in seconds.items():
        print(json.dumps({"check": name, "seconds": round(value, 5)}))
    ge_prepare = in_fresh_process(GE_PREPARE)
    ge_evaluate = in_fresh_process(GE_EVALUATE)
    print(json.dumps({"check": "Great Expectations, prepare (with import)", "seconds": ge_prepare}))
    print(
        json.dumps({"check": "Great Expectations, evaluate (with import)", "seconds": ge_evaluate})
    )

    # The checkpoint check also loads the teacher's weights, which the stage needs anyway.
    per_student = sum(seconds.values()) - seconds["omitted-class subset"]
    students = len(cfg.teachers) * len(cfg.methods) * len(cfg.protocols) * len(cfg.seeds)
    students += len(cfg.protocols) * len(cfg.seeds)
    pipeline = ge_prepare + ge_evaluate + per_student * students
    print(f"per student stage: {per_student * 1000:.1f} ms")
    print(f"whole default pipeline (GE twice + {students} student stages): {pipeline:.1f} s")


if __name__ == "__main__":
    main()
