"""Atomic writes: a failed body leaves the old target byte-identical and no temp files."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from kdflow.io import atomic_dir, atomic_path, sha256_file, write_json


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_atomic_path_replaces_the_target_with_normal_permissions(tmp_path):
    target = tmp_path / "out" / "model.bin"  # parent is created on demand

    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"new weights")
        assert not target.exists()  # nothing visible until the body succeeds

    assert target.read_bytes() == b"new weights"
    assert _mode(target) == 0o666 & ~_umask()
    assert list(target.parent.iterdir()) == [target]


def test_atomic_path_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_bytes(b'{"acc": 0.9}\n')

    with pytest.raises(RuntimeError, match="body failed"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half written")
        raise RuntimeError("body failed")

    assert target.read_bytes() == b'{"acc": 0.9}\n'
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_path_failure_without_an_old_file_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "new.txt") as tmp:
        tmp.write_text("partial")
        raise KeyboardInterrupt

    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_the_whole_folder(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "stale.parquet").write_bytes(b"old")

    with atomic_dir(target) as tmp:
        assert tmp.is_dir() and list(tmp.iterdir()) == []
        (tmp / "train.parquet").write_bytes(b"train")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "meta.json").write_text("{}")

    assert _tree(target) == {"train.parquet": b"train", "sub/meta.json": b"{}"}
    assert _mode(target) == 0o777 & ~_umask()
    assert list(tmp_path.iterdir()) == [target]  # no temp or old folder left


def test_atomic_dir_failure_keeps_the_old_folder_byte_identical(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "train.parquet").write_bytes(b"\x00\x01old table")
    (target / "meta.json").write_text('{"rows": 3}')
    before = _tree(target)

    with pytest.raises(ValueError, match="validation failed"), atomic_dir(target) as tmp:
        (tmp / "train.parquet").write_bytes(b"new table")
        raise ValueError("validation failed")

    assert _tree(target) == before
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_dir_failure_without_an_old_folder_leaves_nothing(tmp_path):
    with pytest.raises(OSError), atomic_dir(tmp_path / "prepared") as tmp:
        (tmp / "x").write_text("partial")
        raise OSError("disk full")

    assert list(tmp_path.iterdir()) == []


def test_write_json_is_sorted_indented_and_atomic(tmp_path):
    target = tmp_path / "metrics" / "prepare.json"

    write_json(target, {"b": 1, "a": [1, 2]})

    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert _mode(target) == 0o666 & ~_umask()
    with pytest.raises(TypeError):
        write_json(target, {"not json": object()})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert list(target.parent.iterdir()) == [target]


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(3 << 20)  # more than one read chunk
    path.write_bytes(data)

    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
