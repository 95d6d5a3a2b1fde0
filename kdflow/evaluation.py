"""One evaluation path for every trained model, and Great Expectations over its outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from kdflow.data.tensors import PreparedData
from kdflow.data.validation import compact_outcome
from kdflow.errors import KdflowError
from kdflow.metrics import omitted_accuracy, summarize
from kdflow.train.checkpoint import data_expectations, load_model
from kdflow.train.outputs import check_logits
from kdflow.train.trainer import predict

# The final models of model assembly; the meta model and per-module checkpoints beside them
# are intermediate products, not classifiers to compare.
ASSEMBLY_MODELS = ("dma", "dma_e2e", "dma_scratch", "m2m", "m2m_e2e", "m2m_scratch")
TEACHERS = ("mll", "mcmi")  # the two teacher stages always run

# What a record copies from its stage's metrics: the grid coordinates, the stage's name (the
# `kdflow.stage` tag of its MLflow runs) and an assembled model's figures before its
# fine-tune (the assembled weights are not kept, so only the stage measured them).
STAGE_KEYS = (
    "stage",
    "teacher",
    "method",
    "protocol",
    "seed",
    "assembled_val_acc",
    "assembled_test_acc",
)


def grid_models(
    teachers: list[str],
    methods: list[str],
    protocols: list[str],
    seeds: list[int],
    assembly_seeds: list[int],
) -> list[str]:
    """Return the `<kind>/<name>` of every model of the current grid, each kind sorted.

    Students are `<teacher>-<method>-<protocol>-s<seed>` for distill.teachers × methods ×
    protocols × seeds, plus the no-teacher baseline `none-none-<protocol>-s<seed>`.
    """
    students = [
        f"{teacher}-{method}-{protocol}-s{seed}"
        for teacher, method in [*((t, m) for t in teachers for m in methods), ("none", "none")]
        for protocol in protocols
        for seed in seeds
    ]
    return [
        *(f"teacher/{t}" for t in sorted(TEACHERS)),
        *(f"distill/{s}" for s in sorted(set(students))),
        *(f"assembly/{a}-s{seed}" for a in sorted(ASSEMBLY_MODELS) for seed in assembly_seeds),
    ]


def find_models(models_dir: Path, metrics_dir: Path, names: list[str]) -> list[dict[str, Any]]:
    """Return one entry per named model: name, kind, model path and its stage's metrics.

    Only the named models count: a file left over from an older grid is never evaluated.
    """
    entries, missing = [], []
    for name in names:
        kind = name.split("/")[0]
        path, metrics_path = models_dir / f"{name}.pt", metrics_dir / f"{name}.json"
        if not path.is_file() or not metrics_path.is_file():
            missing.append(str(path if not path.is_file() else metrics_path))
            continue
        entries.append(
            {
                "name": name,
                "kind": kind,
                "model": path,
                "stage_metrics": json.loads(metrics_path.read_text()),
            }
        )
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise KdflowError(
            f"the params grid has no trained model for {', '.join(missing[:3])}{more}; "
            "run the training stages first (dvc repro)"
        )
    return entries


def evaluate_model(
    entry: dict[str, Any], data: PreparedData
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Return a model's evaluation record and its per-sample test predictions."""
    model, meta = load_model(
        entry["model"],
        expect=data_expectations(data.meta),
        device=data.test.x.device,
    )
    logits = predict(model, data.test)
    check_logits(logits, entry["model"])
    test = summarize(logits, data.test.y, data.num_classes)
    stage = entry["stage_metrics"]
    record: dict[str, Any] = {
        "name": entry["name"],
        "kind": entry["kind"],
        "arch": meta["arch"],
        **{k: stage[k] for k in STAGE_KEYS if k in stage},
        **{f"test_{k}": v for k, v in test.items() if k != "per_class_acc"},
        "per_class_acc": test["per_class_acc"],
    }
    if entry["kind"] == "teacher":
        record["val_cmi"] = summarize(predict(model, data.val), data.val.y, data.num_classes)["cmi"]
    omit = stage.get("omit")
    if omit:
        record["omitted_acc"] = omitted_accuracy(logits, data.test.y, omit)
        record["omit"] = list(omit)
    probs = logits.double().softmax(dim=1)
    predictions = pl.DataFrame(
        {
            "model": [entry["name"]] * len(probs),
            "sample_id": data.test.ids.cpu().numpy(),
            "label": data.test.y.cpu().numpy(),
            "pred": probs.argmax(1).cpu().numpy(),
            "max_prob": probs.max(1).values.cpu().numpy(),
            "prob_sum": probs.sum(1).cpu().numpy(),
        }
    )
    return record, predictions


def validate_evaluation(
    predictions: pl.DataFrame, records: list[dict[str, Any]], num_classes: int
) -> dict[str, Any]:
    """Run Great Expectations over all predictions and metrics records; return the results.

    Raises KdflowError naming each failed expectation.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(name="kdflow_eval")
    flat = pl.DataFrame([{k: v for k, v in r.items() if not isinstance(v, list)} for r in records])
    suites = {
        "predictions": (
            predictions,
            [
                gxe.ExpectColumnValuesToNotBeNull(column="pred"),
                gxe.ExpectColumnValuesToBeBetween(
                    column="prob_sum", min_value=1 - 1e-5, max_value=1 + 1e-5
                ),
                gxe.ExpectColumnValuesToBeBetween(column="max_prob", min_value=0, max_value=1),
                gxe.ExpectColumnValuesToBeBetween(
                    column="pred", min_value=0, max_value=num_classes - 1
                ),
                gxe.ExpectColumnValuesToBeBetween(
                    column="label", min_value=0, max_value=num_classes - 1
                ),
                gxe.ExpectCompoundColumnsToBeUnique(column_list=["model", "sample_id"]),
            ],
        ),
        "records": (
            flat,
            [
                gxe.ExpectColumnValuesToBeUnique(column="name"),
                *[
                    gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1)
                    for c in ("test_acc", "test_ece")
                ],
                gxe.ExpectColumnValuesToBeBetween(column="test_cmi", min_value=0),
                gxe.ExpectColumnValuesToNotBeNull(column="test_acc"),
            ],
        ),
    }
    report: dict[str, Any] = {}
    failures = []
    for name, (frame, expectations) in suites.items():
        suite = gx.ExpectationSuite(name=f"kdflow_eval_{name}")
        for expectation in expectations:
            suite.add_expectation(expectation)
        batch = (
            source.add_dataframe_asset(name=name)
            .add_batch_definition_whole_dataframe("all")
            .get_batch(batch_parameters={"dataframe": frame.to_pandas()})
        )
        outcome = batch.validate(suite, result_format="SUMMARY").to_json_dict()
        report[name] = compact_outcome(outcome)
        for result in outcome["results"]:
            if not result["success"]:
                config = result["expectation_config"]
                failures.append(f"{name}: {config['type']} {config['kwargs'].get('column', '')}")
    report["success"] = not failures
    if failures:
        raise KdflowError("evaluation outputs failed validation: " + "; ".join(failures))
    return report
