"""CIFAR-10/100 from local folders in both official layouts, and the files they refuse."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from kdflow.config import DataParams
from kdflow.data.cifar import load_cifar
from kdflow.data.sources import load_source
from kdflow.errors import KdflowError

LAYOUTS = [("cifar10", "bin"), ("cifar10", "py"), ("cifar100", "bin"), ("cifar100", "py")]


@pytest.mark.parametrize(("source", "fmt"), LAYOUTS)
@pytest.mark.parametrize("point_at", ["parent", "batches_folder"])
def test_load_cifar_returns_exactly_what_was_written(fake_cifar, source, fmt, point_at):
    written = fake_cifar(source, fmt)
    root = written.root if point_at == "parent" else written.folder

    raw = load_cifar(source, root)

    np.testing.assert_array_equal(raw["x_train"], written.x_train)
    np.testing.assert_array_equal(raw["y_train"], written.y_train)
    np.testing.assert_array_equal(raw["x_test"], written.x_test)
    np.testing.assert_array_equal(raw["y_test"], written.y_test)
    assert raw["x_train"].dtype == np.uint8
    assert raw["y_train"].dtype == np.int64
    assert raw["input_shape"] == (3, 32, 32)
    assert raw["num_classes"] == (10 if source == "cifar10" else 100)


def test_cifar_source_goes_through_params(fake_cifar):
    written = fake_cifar("cifar100", "py")

    raw = load_source(DataParams(source="cifar100", path=str(written.root)))

    np.testing.assert_array_equal(raw["x_test"], written.x_test)
    np.testing.assert_array_equal(raw["y_test"], written.y_test)  # fine labels, not coarse


def test_truncated_binary_file_names_the_file_and_record_layout(fake_cifar):
    written = fake_cifar("cifar10", "bin")
    batch = written.files["data_batch_3.bin"]
    batch.write_bytes(batch.read_bytes()[:-100])

    with pytest.raises(KdflowError) as caught:
        load_cifar("cifar10", written.root)

    message = str(caught.value)
    assert str(batch) in message
    assert "3073-byte records" in message
    assert "truncated" in message


def test_cifar100_binary_expects_two_label_bytes(fake_cifar):
    written = fake_cifar("cifar100", "bin")
    train = written.files["train.bin"]
    train.write_bytes(train.read_bytes() + b"\x00")  # one stray byte: not whole 3074-byte records

    with pytest.raises(KdflowError, match="3074-byte records"):
        load_cifar("cifar100", written.root)


def test_python_batch_with_wrong_data_shape_names_the_file_and_shape(fake_cifar):
    written = fake_cifar("cifar10", "py")
    batch = written.files["data_batch_2"]
    bad = {b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
    batch.write_bytes(pickle.dumps(bad, protocol=2))

    with pytest.raises(KdflowError) as caught:
        load_cifar("cifar10", written.root)

    message = str(caught.value)
    assert str(batch) in message
    assert "(4, 100)" in message
    assert "N×3072 uint8" in message


@pytest.mark.parametrize("make_root", ["nonexistent", "empty"])
def test_missing_or_empty_folder_names_the_path_and_expected_layout(tmp_path, make_root):
    root = tmp_path / "cifar"
    if make_root == "empty":
        root.mkdir()

    with pytest.raises(KdflowError) as caught:
        load_cifar("cifar10", root)

    message = str(caught.value)
    assert str(root) in message
    assert "cifar-10-batches-bin/" in message
    assert "cifar-10-batches-py/" in message
    assert "data_batch_5" in message and "test_batch" in message
    assert "\n" not in message


def test_incomplete_folder_is_not_taken_for_a_cifar_folder(fake_cifar):
    written = fake_cifar("cifar100", "bin")
    written.files["test.bin"].unlink()

    with pytest.raises(KdflowError, match="cifar-100-binary/ \\(train.bin, test.bin\\)"):
        load_cifar("cifar100", written.root)


def _marker_writer(marker: Path) -> object:
    """Return an object whose unpickling creates `marker` by calling os.system."""

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch '{marker}'",))

    return Payload()


def _exec_writer(marker: Path) -> object:
    """Return an object whose unpickling creates `marker` through builtins.exec."""

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    return Payload()


@pytest.mark.parametrize("payload", [_marker_writer, _exec_writer])
def test_malicious_pickle_is_refused_and_never_runs(fake_cifar, tmp_path, payload):
    # The payload is real: plain pickle runs it.
    proof = tmp_path / "plain-pickle-ran"
    pickle.loads(pickle.dumps({b"data": payload(proof)}, protocol=2))
    assert proof.exists()

    written = fake_cifar("cifar10", "py")
    marker = tmp_path / "pwned"
    batch = written.files["data_batch_1"]
    batch.write_bytes(pickle.dumps({b"data": payload(marker), b"labels": []}, protocol=2))

    with pytest.raises(KdflowError) as caught:
        load_cifar("cifar10", written.root)

    assert not marker.exists()
    message = str(caught.value)
    assert str(batch) in message
    assert "refused to unpickle" in message


def test_garbage_python_batch_is_a_clear_error(fake_cifar):
    written = fake_cifar("cifar10", "py")
    batch = written.files["test_batch"]
    batch.write_bytes(batch.read_bytes()[:50])

    with pytest.raises(KdflowError, match=f"{batch}: corrupt or truncated pickle"):
        load_cifar("cifar10", written.root)
