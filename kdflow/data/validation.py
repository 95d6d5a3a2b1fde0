"""Great Expectations suites for the prepared tables (schema, labels, finiteness, splits)."""

from __future__ import annotations

import json
import os
from typing import Any

import polars as pl

from kdflow.errors import KdflowError

SPLITS = ("train", "val", "test")
TABLE_COLUMNS = ["sample_id", "label", "x"]


def feature_profile(table: pl.DataFrame) -> pl.DataFrame:
    """Return one row per sample: id, label, feature length, non-finite count and feature dtype.

    Great Expectations checks this profile rather than the raw feature arrays, so a
    CIFAR table (thousands of values per row) validates in seconds.
    """
    columns = []
    if "sample_id" in table.columns:
        columns.append(pl.col("sample_id"))
    if "label" in table.columns:
        columns.append(pl.col("label"))
    if "x" in table.columns:
        features = pl.col("x")
        if isinstance(table.schema["x"], pl.Array):
            features = features.arr.to_list()
        inner = getattr(table.schema["x"], "inner", table.schema["x"])
        exploded = features.list.eval(pl.element().cast(pl.Float64))
        columns += [
            features.list.len().alias("x_length"),
            exploded.list.eval((~pl.element().is_finite()) | pl.element().is_null())
            .list.sum()
            .fill_null(1)
            .alias("x_nonfinite"),
            pl.lit(str(inner)).alias("x_dtype"),
        ]
    return table.select(columns)


def _suite(num_classes: int, feature_length: int, feature_dtype: str) -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=["sample_id", "label", "x_length", "x_nonfinite", "x_dtype"],
            exact_match=True,
        ),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="sample_id"),
        gxe.ExpectColumnValuesToBeInTypeList(column="sample_id", type_list=["int64", "Int64"]),
        gxe.ExpectColumnValuesToBeUnique(column="sample_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="label"),
        gxe.ExpectColumnValuesToBeInTypeList(column="label", type_list=["int64", "Int64"]),
        gxe.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=num_classes - 1),
        gxe.ExpectColumnDistinctValuesToContainSet(
            column="label", value_set=list(range(num_classes))
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="x_length", min_value=feature_length, max_value=feature_length
        ),
        gxe.ExpectColumnValuesToBeBetween(column="x_nonfinite", min_value=0, max_value=0),
        gxe.ExpectColumnValuesToBeInSet(column="x_dtype", value_set=[feature_dtype]),
    ]


def compact_outcome(outcome: dict[str, Any]) -> dict[str, Any]:
    """Return the reproducible part of a Great Expectations result: verdicts and observations.

    GE's own result also carries load and run times, ids and library versions, which differ
    between identical runs; a tracked report keeps each expectation's type, arguments,
    success and observed values only, in a fixed order.
    """
    results = []
    for result in outcome["results"]:
        config = result["expectation_config"]
        kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
        results.append(
            {
                "type": config["type"],
                "kwargs": kwargs,
                "success": result["success"],
                "result": result.get("result") or {},
            }
        )
    results.sort(key=lambda r: (r["type"], json.dumps(r["kwargs"], sort_keys=True, default=str)))
    return {
        "success": outcome["success"],
        "statistics": outcome.get("statistics", {}),
        "results": results,
    }


def _summarise_failure(split: str, result: dict[str, Any], rows: int) -> str:
    config = result["expectation_config"]
    kwargs = {k: v for k, v in config["kwargs"].items() if k not in ("batch_id",)}
    detail = result.get("result") or {}
    if "unexpected_count" in detail:
        sample = detail.get("partial_unexpected_list", [])[:5]
        found = f"{detail['unexpected_count']} of {rows} rows fail (e.g. {sample})"
    elif detail.get("partial_missing_list"):
        missing = detail["partial_missing_list"][:5]
        count = detail.get("missing_count")
        found = f"{count} expected value(s) absent from {rows} rows (e.g. {missing})"
    elif detail.get("observed_value") is not None:
        found = f"observed {detail['observed_value']} in {rows} rows"
    else:
        info = result.get("exception_info") or {}
        found = f"{info.get('exception_message') or 'failed'} ({rows} rows)"
    column = kwargs.get("column")
    where = f"column {column!r}" if column else "table"
    return f"{split}: {config['type']} on {where}: {found}"


def validate_tables(
    tables: dict[str, pl.DataFrame], num_classes: int, feature_length: int, feature_dtype: str
) -> dict[str, Any]:
    """Return a JSON-able validation report of every split plus split disjointness.

    Raises KdflowError naming each failed expectation, split and row count.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(name="kdflow")
    asset = source.add_dataframe_asset(name="prepared")
    batch_definition = asset.add_batch_definition_whole_dataframe("table")

    def run(name: str, frame: pl.DataFrame, expectations: list[Any]) -> dict[str, Any]:
        suite = gx.ExpectationSuite(name=f"kdflow_{name}")
        for expectation in expectations:
            suite.add_expectation(expectation)
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame.to_pandas()})
        return batch.validate(suite, result_format="SUMMARY").to_json_dict()

    report: dict[str, Any] = {"success": True, "splits": {}}
    failures: list[str] = []
    profiles = {}
    for split in SPLITS:
        profile = feature_profile(tables[split])
        profiles[split] = profile
        outcome = run(split, profile, _suite(num_classes, feature_length, feature_dtype))
        report["splits"][split] = compact_outcome(outcome)
        failures += [
            _summarise_failure(split, r, profile.height)
            for r in outcome["results"]
            if not r["success"]
        ]
    if all("sample_id" in p.columns for p in profiles.values()):
        combined = pl.concat([p.select("sample_id") for p in profiles.values()])
        outcome = run("all", combined, [gxe.ExpectColumnValuesToBeUnique(column="sample_id")])
        report["splits"]["all"] = compact_outcome(outcome)
        failures += [
            _summarise_failure("across splits", r, combined.height)
            for r in outcome["results"]
            if not r["success"]
        ]
    report["success"] = not failures
    report["failures"] = failures
    if failures:
        raise KdflowError(
            "prepared data failed validation: "
            + "; ".join(failures)
            + "; nothing written: fix the source data (data.source, data.path) and rerun prepare"
        )
    return report
