"""Later stages read the prepared tables as tensors only while their bytes match meta.json."""

from __future__ import annotations

import pytest
import torch

from kdflow.config import DataParams
from kdflow.data.prepare import prepare
from kdflow.data.tensors import load_prepared
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
