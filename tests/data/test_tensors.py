"""Later stages read the prepared tables as tensors only while their bytes match meta.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from kdflow.config import DataParams
from kdflow.data.prepare import prepare
from kdflow.data.tensors import load_prepared, placement
from kdflow.errors import KdflowError


@pytest.fixture
def prepared(tmp_path):
    out = tmp_path / "prepared"
    prepare(DataParams(source="digits", seed=0), out)
    return out


def test_load_prepared_gives_normalised_tensors_of_the_declared_shape(prepared):
    data = load_prepared(prepared)

    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert data.train.x.shape[1:] == (1, 8, 8) and data.train.x.dtype == torch.float32
    # normalised with the training split's own channel statistics
    assert abs(float(data.train.x.mean())) < 1e-4
    assert abs(float(data.train.x.std()) - 1.0) < 1e-2
    assert len(data.train) + len(data.val) + len(data.test) == 1797


def test_a_table_whose_bytes_changed_after_prepare_is_refused(prepared):
    path = prepared / "val.parquet"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))

    with pytest.raises(KdflowError, match=r"val\.parquet changed after prepare.*rerun the prepare"):
        load_prepared(prepared)


def test_missing_meta_says_to_run_prepare(tmp_path):
    with pytest.raises(KdflowError, match="run the prepare stage first"):
        load_prepared(tmp_path)


def test_data_that_fits_stays_on_the_device(caplog):
    with caplog.at_level("DEBUG"):
        home = placement(400 * 2**20, torch.device("cuda"), "prepared data", free=1000 * 2**20)

    assert home == torch.device("cuda")
    assert "prepared data: 400.0 MiB on cuda" in caplog.text


def test_data_too_big_for_the_device_streams_from_host_with_a_warning(caplog):
    with caplog.at_level("WARNING"):
        home = placement(
            600 * 2**20, torch.device("cuda"), "teacher output cache", free=1000 * 2**20
        )

    assert home == torch.device("cpu")
    assert (
        "teacher output cache needs 600.0 MiB, more than 50% of the 1000.0 MiB free" in caplog.text
    )
    assert "streaming batches" in caplog.text


def test_host_memory_is_never_second_guessed():
    assert placement(10**15, torch.device("cpu"), "prepared data") == torch.device("cpu")


def test_image_bytes_stay_uint8_and_normalise_to_the_float_path(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    out = tmp_path / "prepared"
    prepare(DataParams(source="imagefolder", path=str(tmp_path / "images"), image_size=8), out)
    meta = json.loads((out / "meta.json").read_text())

    data = load_prepared(out)

    train = data.train
    assert train.raw and train.x.dtype == torch.uint8 and train.x.shape[1:] == (3, 8, 8)
    # What the float path computed before: (pixel − mean) / std per channel, once for all.
    mean = torch.tensor(meta["normalization"]["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(meta["normalization"]["std"], dtype=torch.float32).view(1, 3, 1, 1)
    expected = (train.x.to(torch.float32) - mean) / std
    assert torch.equal(train.batch(slice(None)), expected)
    index = torch.tensor([5, 0, 3])
    assert torch.equal(train.batch(index), expected[index])
    assert torch.equal(train.subset(index).batch(slice(None)), expected[index])
    assert train.batch(slice(None)).dtype == torch.float32
