"""A write the filesystem refuses: one error line, exit 2, and the old outputs as they were.

Each test runs the real prepare stage once to get outputs, then reruns it with other params
(so its outputs would differ) while the filesystem refuses the write midway: a file-size
limit (EFBIG), a full tmpfs over data/ (ENOSPC), a read-only one (EROFS).
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import set_params

pytestmark = pytest.mark.slow

OUTPUTS = ("data/prepared", "metrics/prepare.json", ".kdflow/runs/prepare.json")
# Folders a staged write puts its temps in; none may be left there.
TEMP_PLACES = ("data", "metrics", ".kdflow/runs")


def _prepare(
    repo: Path,
    env: dict[str, str],
    preexec: Callable[[], None] | None = None,
    stage: str = "prepare",
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=preexec,
    )


def _snapshot(repo: Path) -> dict[str, str]:
    digests = {}
    for rel in OUTPUTS:
        path = repo / rel
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file():
                digests[str(file.relative_to(repo))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def _temps(repo: Path) -> list[str]:
    return [
        str(p.relative_to(repo))
        for place in TEMP_PLACES
        if (repo / place).is_dir()
        for p in (repo / place).iterdir()
        if p.name.startswith(".")
    ]


def _prepared(repo: Path, env: dict[str, str], num_samples: int) -> dict[str, str]:
    """Run prepare once; return the snapshot of its outputs; set params for a different rerun."""
    set_params(repo, {"data": {"num_samples": num_samples}})
    first = _prepare(repo, env)
    assert first.returncode == 0, first.stderr
    before = _snapshot(repo)
    assert len(before) == 7, before  # 5 files in data/prepared, the metrics, the run record
    set_params(repo, {"data": {"seed": 1}})  # the rerun's tables would differ
    return before


def _assert_one_line_and_nothing_changed(
    done: subprocess.CompletedProcess[str], repo: Path, before: dict[str, str], cause: str
) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("kdflow prepare: error: cannot write data/prepared"), lines[0]
    assert f": {cause}; " in lines[0], lines[0]
    assert _snapshot(repo) == before
    assert _temps(repo) == []


def test_a_file_size_limit_midway_fails_in_one_line_and_keeps_the_old_outputs(
    repo_copy, stage_env, tracking_db
):
    # 20000 samples: train.parquet (~2 MB) outgrows a limit the MLflow store (~1 MB) stays
    # under, so the stage starts its run and fails writing its outputs.
    before = _prepared(repo_copy, stage_env, 20000)
    store = Path(tracking_db.removeprefix("sqlite:///"))
    train = repo_copy / "data" / "prepared" / "train.parquet"
    limit = store.stat().st_size + (512 << 10)
    assert limit < train.stat().st_size, (limit, train.stat().st_size)

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = _prepare(repo_copy, stage_env, limited)

    _assert_one_line_and_nothing_changed(done, repo_copy, before, "File too large (EFBIG)")
    assert "ulimit -f" in done.stderr  # the fix


@pytest.fixture
def tmpfs_data(repo_copy: Path) -> Iterator[Callable[..., Path]]:
    """Yield a function that mounts a small tmpfs over repo/<folder> holding its current files."""
    mounted: list[Path] = []

    def mount(options: str, folder: str = "data") -> Path:
        data = repo_copy / folder
        data.mkdir(exist_ok=True)
        keep = repo_copy / f"{folder}-before-mount"
        shutil.copytree(data, keep, symlinks=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(data)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            shutil.rmtree(keep)
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(data)
        shutil.copytree(keep, data, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(keep)
        return data

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_filesystem_fails_in_one_line_and_keeps_the_old_outputs(
    repo_copy, stage_env, tracking_db, tmpfs_data
):
    before = _prepared(repo_copy, stage_env, 500)
    data = tmpfs_data("size=1m")
    # Filled up to 16 KiB: the new tables (~80 KiB) cannot fit beside the old ones.
    free = shutil.disk_usage(data).free
    (data / "filler").write_bytes(b"\0" * (free - (16 << 10)))
    assert shutil.disk_usage(data).free <= 16 << 10

    done = _prepare(repo_copy, stage_env)

    (data / "filler").unlink()
    _assert_one_line_and_nothing_changed(
        done, repo_copy, before, "No space left on device (ENOSPC)"
    )


def test_a_read_only_filesystem_fails_in_one_line_and_keeps_the_old_outputs(
    repo_copy, stage_env, tracking_db, tmpfs_data
):
    before = _prepared(repo_copy, stage_env, 500)
    data = tmpfs_data("size=4m")
    remount = subprocess.run(["mount", "-o", "remount,ro", str(data)], capture_output=True)
    assert remount.returncode == 0, remount.stderr

    done = _prepare(repo_copy, stage_env)

    _assert_one_line_and_nothing_changed(done, repo_copy, before, "Read-only file system (EROFS)")


def test_a_full_disk_under_the_resume_checkpoint_fails_in_one_line(
    repo_copy, stage_env, tracking_db, tmpfs_data
):
    # A checkpoint is written after every epoch, outside the staged outputs: the refused
    # write names the checkpoint and the cause instead of torch's writer error.
    _prepared(repo_copy, stage_env, 500)
    tmpfs_data("size=16k", "checkpoints")

    done = _prepare(repo_copy, stage_env, stage="teacher_mll")

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    line = done.stderr.splitlines()[-1]
    assert [x for x in done.stderr.splitlines() if "error" in x] == [line]
    assert line.startswith("kdflow teacher_mll: error: cannot write checkpoints/"), line
    assert "No space left on device (ENOSPC)" in line, line
    assert not (repo_copy / "models" / "teacher" / "mll.pt").exists()
    assert [p.name for p in (repo_copy / "checkpoints").iterdir()] == []
