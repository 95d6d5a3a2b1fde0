"""Stratified, seeded splits; canonical tables; prepare() writes validated outputs or nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from kdflow.config import DataParams, params_hash
from kdflow.data.prepare import build_tables, prepare
from kdflow.data.sources import stratified_split
from kdflow.errors import KdflowError

UNEVEN_LABELS = np.repeat(np.arange(4), [50, 23, 7, 3])  # classes of very different sizes


def test_stratified_split_is_deterministic_for_a_seed():
    first = stratified_split(UNEVEN_LABELS, 0.2, seed=5)
    second = stratified_split(UNEVEN_LABELS, 0.2, seed=5)
    other = stratified_split(UNEVEN_LABELS, 0.2, seed=6)

    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5])
def test_stratified_split_carves_each_class_in_proportion(fraction):
    kept, carved = stratified_split(UNEVEN_LABELS, fraction, seed=0)

    assert len(np.intersect1d(kept, carved)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([kept, carved])), np.arange(83))
    class_sizes = np.bincount(UNEVEN_LABELS)
    carved_counts = np.bincount(UNEVEN_LABELS[carved], minlength=4)
    for size, count in zip(class_sizes, carved_counts, strict=True):
        assert count >= 1
        assert abs(count - fraction * size) <= 1
    assert (np.bincount(UNEVEN_LABELS[kept], minlength=4) >= 1).all()


def test_stratified_split_refuses_a_class_too_small_to_split():
    labels = np.array([0, 0, 0, 1])

    with pytest.raises(KdflowError, match="class 1 has 1 sample"):
        stratified_split(labels, 0.3, seed=0)


def test_build_tables_keeps_sample_ids_tied_to_their_rows(make_raw):
    raw = make_raw(num_classes=3, per_class=20, test_per_class=5)
    tables = build_tables(raw, DataParams(val_fraction=0.2, seed=1))

    assert {s: t.height for s, t in tables.items()} == {"train": 48, "val": 12, "test": 15}
    assert np.bincount(tables["val"]["label"].to_numpy()).tolist() == [4, 4, 4]
    train_ids = tables["train"]["sample_id"].to_numpy()
    val_ids = tables["val"]["sample_id"].to_numpy()
    np.testing.assert_array_equal(np.sort(np.concatenate([train_ids, val_ids])), np.arange(60))
    np.testing.assert_array_equal(tables["test"]["sample_id"].to_numpy(), np.arange(60, 75))
    for split, source in (("train", "train"), ("val", "train"), ("test", "test")):
        table = tables[split]
        rows = table["sample_id"].to_numpy() - (60 if split == "test" else 0)
        np.testing.assert_array_equal(table["label"].to_numpy(), raw[f"y_{source}"][rows])
        np.testing.assert_array_equal(table["x"].to_numpy(), raw[f"x_{source}"][rows])
        assert table.schema == pl.Schema(
            {"sample_id": pl.Int64, "label": pl.Int64, "x": pl.Array(pl.Float32, 4)}
        )


def test_build_tables_is_deterministic_for_a_seed(make_raw):
    raw = make_raw()
    first = build_tables(raw, DataParams(seed=3))
    second = build_tables(raw, DataParams(seed=3))
    other = build_tables(raw, DataParams(seed=4))

    for split in ("train", "val", "test"):
        assert first[split].equals(second[split])
    assert not first["val"]["sample_id"].equals(other["val"]["sample_id"])
    assert first["test"].equals(other["test"])  # the test split never depends on the seed


def test_build_tables_rejects_features_that_do_not_match_the_input_shape(make_raw):
    raw = make_raw(length=4)
    raw["input_shape"] = (1, 5)

    with pytest.raises(KdflowError, match=r"expected N×5 for input shape \(1, 5\)"):
        build_tables(raw, DataParams())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prepare_writes_tables_meta_and_validation_with_true_hashes(tmp_path):
    params = DataParams(source="digits", seed=2, val_fraction=0.1, test_fraction=0.2)
    out = tmp_path / "prepared"

    meta = prepare(params, out)

    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json",
        "test.parquet",
        "train.parquet",
        "val.parquet",
        "validation.json",
    ]
    assert json.loads((out / "meta.json").read_text()) == meta
    tables = {s: pl.read_parquet(out / f"{s}.parquet") for s in ("train", "val", "test")}
    for split, table in tables.items():
        assert meta["hashes"][split] == _sha256(out / f"{split}.parquet")
        assert meta["rows"][split] == table.height
        counts = np.bincount(table["label"].to_numpy(), minlength=10).tolist()
        assert meta["class_counts"][split] == counts
    assert sum(meta["rows"].values()) == 1797
    assert meta["num_classes"] == 10 and meta["input_shape"] == [1, 8, 8]
    assert meta["feature_dtype"] == "Float32"
    assert meta["params_hash"] == params_hash(params)
    assert meta["validation"] == "passed"
    train_x = tables["train"]["x"].to_numpy()
    np.testing.assert_allclose(meta["normalization"]["mean"], [train_x.mean()], rtol=1e-5)
    report = json.loads((out / "validation.json").read_text())
    assert report["success"] is True and report["failures"] == []
    assert set(report["splits"]) == {"train", "val", "test", "all"}

    again = tmp_path / "again"
    assert prepare(params, again)["hashes"] == meta["hashes"]  # same params, same bytes
    # Every file, validation.json (no Great Expectations times or ids) and meta.json included.
    assert {p.name: p.read_bytes() for p in again.iterdir()} == {
        p.name: p.read_bytes() for p in out.iterdir()
    }


def test_validation_report_holds_no_run_times_ids_or_versions(tmp_path):
    out = tmp_path / "prepared"
    prepare(DataParams(source="digits"), out)

    text = (out / "validation.json").read_text()
    report = json.loads(text)

    for volatile in ("ge_load_time", "run_id", "run_time", "validation_time", "batch_id"):
        assert volatile not in text, volatile
    assert "great_expectations_version" not in text
    for outcome in report["splits"].values():
        assert set(outcome) == {"success", "statistics", "results"}
        for result in outcome["results"]:
            assert set(result) == {"type", "kwargs", "success", "result"}
    train = {r["type"]: r for r in report["splits"]["train"]["results"]}
    assert train["expect_table_row_count_to_be_between"]["result"]["observed_value"] > 0


def _image_tree_with_empty_test_class(root: Path) -> None:
    for label, name in enumerate(("a", "b", "c")):
        for split, count in (("train", 4), ("test", 0 if name == "c" else 2)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (4, 4), (label * 80, 0, 0)).save(folder / f"{i}.png")


def test_prepare_writes_nothing_when_validation_fails(tmp_path):
    images = tmp_path / "images"
    _image_tree_with_empty_test_class(images)  # class c has a test folder with no image
    params = DataParams(source="imagefolder", path=str(images), image_size=4)
    out = tmp_path / "out" / "prepared"
    out.parent.mkdir()

    with pytest.raises(KdflowError) as caught:
        prepare(params, out)

    message = str(caught.value)
    assert "failed validation" in message
    assert "test: expect_column_distinct_values_to_contain_set on column 'label'" in message
    assert "1 expected value(s) absent from 4 rows (e.g. [2])" in message  # class c, 4 test rows
    assert list(out.parent.iterdir()) == []  # no table, no meta, no temp folder


def test_failed_prepare_leaves_previous_outputs_untouched(tmp_path):
    out = tmp_path / "prepared"
    prepare(DataParams(source="digits"), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    images = tmp_path / "images"
    _image_tree_with_empty_test_class(images)

    with pytest.raises(KdflowError):
        prepare(DataParams(source="imagefolder", path=str(images), image_size=4), out)

    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "prepared"]  # no temp dir
