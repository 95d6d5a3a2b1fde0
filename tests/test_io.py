"""Staged writes: a stage's outputs appear together or not at all, and stable JSON."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from kdflow.errors import KdflowError
from kdflow.io import (
    OutputWriteError,
    atomic_path,
    json_text,
    sha256_file,
    staged_outputs,
    write_error_message,
    write_json,
)


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


def test_staged_folder_replaces_the_whole_folder(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "stale.parquet").write_bytes(b"old")

    with staged_outputs() as out:
        tmp = out.dir(target)
        assert tmp.is_dir() and list(tmp.iterdir()) == []
        (tmp / "train.parquet").write_bytes(b"train")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "meta.json").write_text("{}")

    assert _tree(target) == {"train.parquet": b"train", "sub/meta.json": b"{}"}
    assert _mode(target) == 0o777 & ~_umask()
    assert list(tmp_path.iterdir()) == [target]  # no temp or old folder left


def _outputs(root: Path) -> tuple[Path, Path, Path]:
    """Return an old folder, metrics file and model file under root (a stage's outputs)."""
    folder, metrics, model = root / "data" / "prepared", root / "metrics.json", root / "m.pt"
    folder.mkdir(parents=True)
    (folder / "train.parquet").write_bytes(b"\x00\x01old table")
    (folder / "meta.json").write_text('{"rows": 3}')
    metrics.write_text('{"acc": 0.9}\n')
    model.write_bytes(b"old weights")
    return folder, metrics, model


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_staged_outputs_appear_together(tmp_path):
    folder, metrics, model = _outputs(tmp_path)

    with staged_outputs() as out:
        (out.dir(folder) / "train.parquet").write_bytes(b"new table")
        out.path(metrics).write_text('{"acc": 0.95}\n')
        out.path(model).write_bytes(b"new weights")
        # Nothing is visible before every output is written.
        assert (folder / "meta.json").is_file() and model.read_bytes() == b"old weights"

    assert _tree(folder) == {"train.parquet": b"new table"}
    assert metrics.read_text() == '{"acc": 0.95}\n' and model.read_bytes() == b"new weights"
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["data", "prepared", "train.parquet", "metrics.json", "m.pt"]
    )


@pytest.mark.parametrize("fail_at", ["folder", "metrics", "model"])
def test_a_failed_second_write_leaves_every_old_output_byte_identical(tmp_path, fail_at):
    folder, metrics, model = _outputs(tmp_path)
    before = _all_files(tmp_path)

    with pytest.raises(RuntimeError, match="write failed"), staged_outputs() as out:
        tmp = out.dir(folder)
        (tmp / "train.parquet").write_bytes(b"new table")
        if fail_at == "folder":
            raise RuntimeError("write failed")
        out.path(metrics).write_text('{"acc": 0.95}\n')
        if fail_at == "metrics":
            raise RuntimeError("write failed")
        out.path(model).write_bytes(b"half")
        raise RuntimeError("write failed")

    assert _all_files(tmp_path) == before  # no temp files either: they would be listed


def test_a_failed_rename_during_commit_puts_every_old_output_back(tmp_path, monkeypatch):
    folder, metrics, model = _outputs(tmp_path)
    before = _all_files(tmp_path)
    real_replace = os.replace

    def replace(src, dst):
        # The last output's rename: the first two are in place by then.
        if Path(dst) == model and str(src).endswith(".tmp"):
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    refused = r"cannot write .*m\.pt: No space left on device"
    with pytest.raises(OutputWriteError, match=refused), staged_outputs() as out:
        (out.dir(folder) / "train.parquet").write_bytes(b"new table")
        out.path(metrics).write_text('{"acc": 0.95}\n')
        out.path(model).write_bytes(b"new weights")
    monkeypatch.undo()

    assert _all_files(tmp_path) == before


def test_staged_outputs_without_old_outputs_leave_nothing_on_failure(tmp_path):
    with pytest.raises(KeyboardInterrupt), staged_outputs() as out:
        (out.dir(tmp_path / "prepared") / "x").write_text("partial")
        out.path(tmp_path / "m.json").write_text("partial")
        raise KeyboardInterrupt

    assert list(tmp_path.iterdir()) == []


def test_a_refused_write_becomes_one_line_naming_the_output(tmp_path):
    target = tmp_path / "prepared"

    with pytest.raises(OutputWriteError) as caught, staged_outputs() as out:
        tmp = out.dir(target)
        raise OSError(27, "File too large", str(tmp / "train.parquet"))

    assert isinstance(caught.value, KdflowError)
    assert str(caught.value) == (
        f"cannot write {target / 'train.parquet'}: File too large (EFBIG); the file exceeds "
        "the file-size limit (ulimit -f) or the filesystem's largest file; raise the limit or "
        "write to another filesystem, then rerun"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_polars_io_error_is_recognised_as_a_refused_write(tmp_path):
    import polars as pl

    target = tmp_path / "m.json"
    refused = r"m\.json: No space left on device \(ENOSPC\)"
    with pytest.raises(OutputWriteError, match=refused), staged_outputs() as out:
        out.path(target)
        raise pl.exceptions.ComputeError("underlying IO error: ... (os error 28)")


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError), staged_outputs() as out:
        out.path(tmp_path / "m.json")
        raise FileNotFoundError(2, "No such file or directory", "elsewhere")


@pytest.mark.parametrize(
    ("code", "name"), [(28, "ENOSPC"), (30, "EROFS"), (13, "EACCES"), (122, "EDQUOT")]
)
def test_write_error_message_names_the_errno(code, name):
    message = write_error_message(OSError(code, os.strerror(code), "x/y.json"))

    assert message.startswith(f"cannot write x/y.json: {os.strerror(code)} ({name}); ")


def test_json_text_is_stable_and_never_invalid_json():
    data = {"b": 0.1 + 0.2, "a": [float("nan"), float("inf"), 1e-300], "c": {"z": 1, "y": 2.5}}

    text = json_text(data)

    assert text == json_text(json.loads(text) | {"a": [None, None, 1e-300]})
    assert json.loads(text) == {
        "a": [None, None, 1e-300],
        "b": 0.30000000000000004,
        "c": {"y": 2.5, "z": 1},
    }
    assert "NaN" not in text and "Infinity" not in text
    assert text.index('"a"') < text.index('"b"') < text.index('"c"')


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
