"""The Great Expectations suite: valid tables pass; each corruption is named with split and rows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import pytest

from kdflow.config import DataParams
from kdflow.data.prepare import build_tables
from kdflow.data.validation import validate_tables
from kdflow.errors import KdflowError

NUM_CLASSES = 3
LENGTH = 4
Tables = dict[str, pl.DataFrame]


@pytest.fixture
def tables(make_raw) -> Tables:
    """Valid tables: train 48, val 12, test 15 rows; 3 classes; Float32 features of length 4."""
    raw = make_raw(num_classes=NUM_CLASSES, per_class=20, test_per_class=5, length=LENGTH)
    return build_tables(raw, DataParams(val_fraction=0.2))


def _validate(tables: Tables) -> dict:
    return validate_tables(tables, NUM_CLASSES, LENGTH, "Float32")


def _set_feature(table: pl.DataFrame, row: int, value: float) -> pl.DataFrame:
    x = table["x"].to_numpy().copy()  # N×LENGTH float32
    x[row, 1] = value
    return table.with_columns(x=pl.Series(x))


def _set_label(table: pl.DataFrame, row: int, value: int | None) -> pl.DataFrame:
    at_row = pl.int_range(pl.len()) == row
    return table.with_columns(label=pl.when(at_row).then(value).otherwise(pl.col("label")))


def _shorten_one_feature(table: pl.DataFrame) -> pl.DataFrame:
    rows = [list(map(float, x)) for x in table["x"].to_numpy()]
    rows[0] = rows[0][:3]
    return table.with_columns(x=pl.Series(rows, dtype=pl.List(pl.Float32)))


# name → (corruption of the valid tables, expected message fragments)
CORRUPTIONS: dict[str, tuple[Callable[[Tables], Tables], list[str]]] = {
    "label out of range": (
        lambda t: {**t, "train": _set_label(t["train"], 0, NUM_CLASSES)},
        ["train: expect_column_values_to_be_between on column 'label'", "1 of 48 rows", "[3]"],
    ),
    "NaN in features": (
        lambda t: {**t, "val": _set_feature(t["val"], 2, np.nan)},
        ["val: expect_column_values_to_be_between on column 'x_nonfinite'", "1 of 12 rows"],
    ),
    "inf in features": (
        lambda t: {**t, "test": _set_feature(t["test"], 0, -np.inf)},
        ["test: expect_column_values_to_be_between on column 'x_nonfinite'", "1 of 15 rows"],
    ),
    "null label": (
        lambda t: {**t, "test": _set_label(t["test"], 3, None)},
        ["test: expect_column_values_to_not_be_null on column 'label'", "1 of 15 rows"],
    ),
    "class missing from val": (
        lambda t: {**t, "val": t["val"].filter(pl.col("label") != 2)},
        [
            "val: expect_column_distinct_values_to_contain_set on column 'label'",
            "absent from 8 rows (e.g. [2])",
        ],
    ),
    "sample_id in two splits": (
        lambda t: {**t, "test": pl.concat([t["test"], t["train"].head(1)])},
        ["across splits: expect_column_values_to_be_unique on column 'sample_id'", "of 76 rows"],
    ),
    "duplicated sample_id within a split": (
        lambda t: {**t, "val": pl.concat([t["val"], t["val"].tail(1)])},
        ["val: expect_column_values_to_be_unique on column 'sample_id'", "2 of 13 rows"],
    ),
    "wrong feature length": (
        lambda t: {**t, "train": _shorten_one_feature(t["train"])},
        ["train: expect_column_values_to_be_between on column 'x_length'", "1 of 48 rows", "[3]"],
    ),
    "wrong feature dtype": (
        lambda t: {**t, "val": t["val"].with_columns(pl.col("x").cast(pl.Array(pl.Float64, 4)))},
        ["val: expect_column_values_to_be_in_set on column 'x_dtype'", "12 of 12 rows", "Float64"],
    ),
    "missing column": (
        lambda t: {**t, "test": t["test"].drop("label")},
        ["test: expect_table_columns_to_match_set on table", "in 15 rows"],
    ),
}


def test_valid_tables_pass(tables):
    report = _validate(tables)

    assert report["success"] is True
    assert report["failures"] == []
    assert set(report["splits"]) == {"train", "val", "test", "all"}
    assert all(outcome["success"] for outcome in report["splits"].values())


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_each_corruption_is_named_with_split_and_row_count(tables, corruption):
    corrupt, fragments = CORRUPTIONS[corruption]

    with pytest.raises(KdflowError) as caught:
        _validate(corrupt(tables))

    message = str(caught.value)
    assert message.startswith("prepared data failed validation: ")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
