"""Staged, all-or-nothing output writes and content hashes: the one place outputs are written.

A stage writes every output to a temp path beside its target (`staged_outputs`); only when
all of them are written are they renamed into place, so a stage's outputs appear together or
not at all. A write the filesystem refuses (full, read-only, too large, no permission) becomes
one OutputWriteError line naming the output, the cause and a fix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdflow.errors import KdflowError

_UMASK = os.umask(0)
os.umask(_UMASK)

RUNS_DIR = Path(".kdflow/runs")  # untracked: run ids and durations, never in a DVC output

# Errors that say the filesystem refused the write, with what the user can do about each.
WRITE_HINTS = {
    errno.ENOSPC: "free space on that filesystem and rerun",
    errno.EDQUOT: "free space or raise the disk quota, then rerun",
    errno.EFBIG: "the file exceeds the file-size limit (ulimit -f) or the filesystem's "
    "largest file; raise the limit or write to another filesystem, then rerun",
    errno.EROFS: "the filesystem is read-only; remount it read-write or run from a "
    "writable checkout",
    errno.EACCES: "no permission to write there; fix the folder's ownership or permissions",
    errno.EPERM: "the write is not permitted there; fix the folder's ownership or permissions",
}
# Rust libraries (polars) report an OS error only inside their message.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def write_error_message(exc: OSError, path: str | Path | None = None) -> str:
    """Return `cannot write <path>: <strerror> (<errno name>); <fix hint>` for a refused write."""
    code = exc.errno or 0
    where = path if path is not None else exc.filename
    reason = exc.strerror or os.strerror(code)
    name = errno.errorcode.get(code, str(code))
    hint = WRITE_HINTS.get(code, "check the filesystem and rerun")
    return f"cannot write {where or 'an output'}: {reason} ({name}); {hint}"


def as_write_error(exc: BaseException) -> OSError | None:
    """Return the refused-write OSError `exc` is or carries (a polars error's "os error N")."""
    if isinstance(exc, OSError):
        return exc if exc.errno in WRITE_HINTS else None
    found = _RUST_OS_ERROR.search(str(exc)) if isinstance(exc, Exception) else None
    if found and int(found.group(1)) in WRITE_HINTS:
        code = int(found.group(1))
        return OSError(code, os.strerror(code))
    return None


class OutputWriteError(KdflowError):
    """The filesystem refused an output write; the message names the output and a fix."""

    def __init__(self, exc: OSError, path: str | Path | None = None) -> None:
        super().__init__(write_error_message(exc, path))
        self.errno = exc.errno


class StagedOutputs:
    """Temp paths beside a stage's outputs; `commit` moves them all into place, or none."""

    def __init__(self) -> None:
        self._staged: dict[Path, Path] = {}  # target → temp file or temp folder
        self._current: Path | None = None  # the target a write without a file name was for

    def path(self, target: str | Path) -> Path:
        """Return a temp file path beside `target` (same filesystem) to write it to."""
        target = self._claim(target)
        try:
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as exc:
            raise OutputWriteError(exc, target) from None
        os.close(fd)
        self._staged[target] = Path(name)
        return Path(name)

    def dir(self, target: str | Path) -> Path:
        """Return an empty temp folder beside `target` to build the folder `target` in."""
        target = self._claim(target)
        try:
            name = tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as exc:
            raise OutputWriteError(exc, target) from None
        self._staged[target] = Path(name)
        return Path(name)

    def _claim(self, target: str | Path) -> Path:
        target = Path(target)
        if target in self._staged:
            raise ValueError(f"{target} is staged twice")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputWriteError(exc, target.parent) from None
        self._current = target
        return target

    def target_of(self, filename: str | Path | None) -> Path | None:
        """Return the output a temp path (or a file inside a temp folder) stands for."""
        if filename is None:
            return self._current
        path = Path(os.fsdecode(filename))
        for target, tmp in self._staged.items():
            if path == tmp:
                return target
            if path.is_relative_to(tmp):
                return target / path.relative_to(tmp)
        return path

    def commit(self) -> None:
        """Move every staged temp onto its target; on a failure put every old output back."""
        done: list[tuple[Path, Path | None]] = []  # (target, its old version set aside)
        try:
            for target, tmp in self._staged.items():
                os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~_UMASK)
                done.append((target, _set_aside(target)))
                os.replace(tmp, target)
        except BaseException:
            for target, old in reversed(done):
                if not self._staged[target].exists():  # the new output is in place
                    _remove(target)
                if old is None:
                    continue
                if target.exists() and os.path.samefile(old, target):
                    old.unlink()  # the old file never left (rename of a link to itself is a no-op)
                else:
                    os.replace(old, target)
            raise
        for _, old in done:
            if old is not None:
                _remove(old)
        self._staged.clear()

    def discard(self) -> None:
        """Remove every temp that was not committed."""
        for tmp in self._staged.values():
            _remove(tmp)
        self._staged.clear()


def _set_aside(target: Path) -> Path | None:
    """Keep the old version of `target` under a hidden name until the commit is done."""
    if not (target.exists() or target.is_symlink()):
        return None
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    _remove(old)  # left by a killed process that had this pid
    if target.is_file() and not target.is_symlink():
        with contextlib.suppress(OSError):
            # A hard link keeps the old file while os.replace swaps the name atomically:
            # readers never see the output missing.
            os.link(target, old)
            return old
    os.replace(target, old)  # a folder cannot be renamed over; it moves aside first
    return old


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_outputs() -> Iterator[StagedOutputs]:
    """Yield a StagedOutputs; when the body succeeds every staged output is moved into place.

    On any exception every temp is removed and the old outputs stay byte-identical; a write
    the filesystem refused is re-raised as one OutputWriteError naming the output.
    """
    staged = StagedOutputs()
    try:
        yield staged
        staged.commit()
    except OutputWriteError:
        raise
    except Exception as exc:
        refused = as_write_error(exc)
        if refused is None:
            raise
        filename = exc.filename if isinstance(exc, OSError) else None
        raise OutputWriteError(refused, staged.target_of(filename)) from exc
    finally:
        staged.discard()


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success it is renamed onto `target`, else removed."""
    with staged_outputs() as out:
        yield out.path(target)


def stable(data: Any) -> Any:
    """Return `data` with non-finite floats as None: JSON has no NaN or Infinity."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: stable(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [stable(v) for v in data]
    return data


def json_text(data: Any) -> str:
    """Return `data` as indented, key-sorted JSON; floats as their shortest exact repr."""
    # repr is the shortest string that reads back as the same float: equal floats give equal
    # bytes and nothing is lost, so a rerun that differs in the last bit shows in dvc.lock.
    return json.dumps(stable(data), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(target: str | Path, data: Any) -> None:
    """Write `data` as stable JSON (json_text) to `target` atomically."""
    text = json_text(data)
    with staged_outputs() as out:
        out.path(target).write_text(text)


def tsv_text(rows: list[dict[str, Any]]) -> str:
    """Return rows (same keys) as a tab-separated table with a header; floats to 6 digits."""
    columns = list(rows[0]) if rows else []
    lines = ["\t".join(columns)]
    lines += [
        "\t".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c]) for c in columns)
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def write_tsv(target: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as a tab-separated table (tsv_text) atomically."""
    text = tsv_text(rows)
    with staged_outputs() as out:
        out.path(target).write_text(text)


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_record_path(stage: str) -> Path:
    """Return the untracked record of a stage's last run: `.kdflow/runs/<DVC stage name>.json`.

    Under `dvc repro` the name is DVC's (DVC_STAGE, e.g. distill@mll-kd-full-0); a stage run
    by hand uses its own name.
    """
    name = os.environ.get("DVC_STAGE") or stage
    return RUNS_DIR / f"{name.replace('/', '_')}.json"


def write_run_record(out: StagedOutputs, stage: str, run_id: str, figures: dict[str, Any]) -> None:
    """Stage the untracked record of this run: stage, MLflow run id and `figures` (durations)."""
    record = {"stage": stage, "mlflow_run_id": run_id, **figures}
    out.path(run_record_path(stage)).write_text(json_text(record))


def read_run_record(stage: str, root: str | Path = ".") -> dict[str, Any] | None:
    """Return the last run record of kdflow stage `stage` (its run id, durations), if any."""
    runs = Path(root) / RUNS_DIR
    if not runs.is_dir():
        return None
    for path in [runs / f"{stage}.json", *sorted(runs.glob("*.json"))]:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("stage") == stage:
            return record
    return None
