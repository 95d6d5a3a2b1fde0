"""Scratch DVC workspaces that share one DVC remote, and the commands run in them.

DVC locks a workspace for the length of a `dvc repro`, so two stages never run in one
workspace at once. Each stage therefore runs in its own scratch workspace: a `git clone
--shared` of the repository at the commit the flow started from, plus the user's uncommitted
edits to tracked files and untracked, not-ignored files (a snapshot taken once at flow start,
so edits made while the flow runs do not leak into half of its stages). The workspaces share
a DVC remote: `dvc fetch --run-cache` → `dvc repro --pull STAGE` → `dvc push --run-cache`,
so upstream stages are restored from the run-cache instead of recomputed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kdflow.errors import KdflowError

REMOTE_ENV = "KDFLOW_DVC_REMOTE"  # a per-machine remote, e.g. a shared mount at another path
DEFAULT_REMOTE = "../kdflow-remote"  # relative to the repository root: beside the checkout
FLOW_REMOTE_NAME = "kdflow"  # the name a remote given as a URL or path is registered under
LINK_MIN_BYTES = 1 << 20  # uncommitted files this big are hard-linked into workspaces
# DVC 3's progress lines for a stage it runs and one it restores from the run-cache.
_RUNNING = re.compile(r"^Running stage '([^']+)':")
_RESTORED = re.compile(r"^Stage '([^']+)' is cached - skipping run")


@dataclass(frozen=True)
class Remote:
    """A DVC remote: its name in the repository's config and its absolute URL."""

    name: str
    url: str


@dataclass(frozen=True)
class Snapshot:
    """What a scratch workspace is made of: a commit plus the uncommitted edits on top."""

    git_root: Path  # the git repository's top level
    dvc_subdir: str  # the DVC project's folder inside it ("" at the top level)
    commit: str
    overlay: Path  # copies of changed and untracked files, at their relative paths
    deleted: tuple[str, ...]  # tracked files deleted in the working tree
    dirty: bool  # whether the snapshot differs from its commit


@dataclass(frozen=True)
class CommandResult:
    """The exit code and the lines of a command's combined output."""

    returncode: int
    lines: tuple[str, ...]


def git(root: Path, *args: str) -> str:
    """Run git in `root`; return its stdout, raising a one-line error on failure."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KdflowError(f"git {args[0]} failed in {root}: {exc}") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise KdflowError(f"git {args[0]} failed in {root}: {reason}")
    return done.stdout


def dvc_root(start: Path) -> Path:
    """Return the DVC project root at or above `start`."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(str(start))).resolve()
    except NotDvcRepoError:
        raise KdflowError(
            f"{start} is not inside a DVC project; run the flow from the repository root "
            "or pass --root"
        ) from None


def take_snapshot(root: Path, into: Path) -> Snapshot:
    """Record HEAD and copy the uncommitted edits of the repository at `root` into `into`."""
    try:
        top = Path(git(root, "rev-parse", "--show-toplevel").strip()).resolve()
        commit = git(root, "rev-parse", "--verify", "HEAD").strip()
    except KdflowError:
        raise KdflowError(
            f"{root} is not a git repository with a commit; the flow's workspaces are clones "
            "of HEAD (git init && git add -A && git commit)"
        ) from None
    # Paths relative to the top level; -z keeps odd file names intact.
    changed = git(top, "diff", "--name-only", "--no-renames", "-z", "HEAD").split("\0")
    untracked = git(top, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
    overlay = into / "overlay"
    overlay.mkdir(parents=True)
    deleted: list[str] = []
    edits = [rel for rel in [*changed, *untracked] if rel]
    for rel in edits:
        source = top / rel
        if source.is_file() or source.is_symlink():
            (overlay / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, overlay / rel, follow_symlinks=False)
        elif not source.exists():
            deleted.append(rel)
    subdir = root.resolve().relative_to(top).as_posix()
    subdir = "" if subdir == "." else subdir
    return Snapshot(top, subdir, commit, overlay, tuple(deleted), dirty=bool(edits))


def _link_or_copy(source: str, target: str) -> None:
    # Big untracked files (data) are hard-linked into each workspace, not copied. Small ones
    # are copied: DVC rewrites dvc.lock and .gitignore in place, which must not reach the
    # other workspaces through a shared inode.
    if os.path.getsize(source) >= LINK_MIN_BYTES:
        with contextlib.suppress(OSError):
            os.link(source, target)
            return
    shutil.copy2(source, target)


def make_workspace(snapshot: Snapshot, dest: Path, remote: Remote) -> Path:
    """Create a scratch workspace at `dest` from `snapshot`; return its DVC root."""
    # --shared borrows the object store instead of copying it: a clone takes milliseconds.
    source = str(snapshot.git_root)
    git(dest.parent, "clone", "--quiet", "--shared", "--no-checkout", source, str(dest))
    git(dest, "checkout", "--quiet", "--detach", snapshot.commit)
    shutil.copytree(
        snapshot.overlay, dest, symlinks=True, dirs_exist_ok=True, copy_function=_link_or_copy
    )
    for rel in snapshot.deleted:
        with contextlib.suppress(FileNotFoundError):
            (dest / rel).unlink()
    root = dest / snapshot.dvc_subdir if snapshot.dvc_subdir else dest
    # The user's .dvc/config.local (credentials, extra remotes) is git-ignored: carry it over.
    local_config = snapshot.git_root / snapshot.dvc_subdir / ".dvc" / "config.local"
    if local_config.is_file():
        shutil.copy2(local_config, root / ".dvc" / "config.local")
    use_remote(root, remote)
    return root


def use_remote(root: Path, remote: Remote) -> None:
    """Make `remote` the default DVC remote of the workspace at `root` (its local config)."""
    from dvc.config import Config

    # An absolute URL: a relative one in the tracked config would resolve against this copy.
    with Config(dvc_dir=str(root / ".dvc")).edit("local") as conf:
        conf.setdefault("remote", {}).setdefault(remote.name, {})["url"] = remote.url
        conf.setdefault("core", {})["remote"] = remote.name


def resolve_remote(root: Path, requested: str | None) -> Remote:
    """Return the DVC remote the flow shares, making it this checkout's default if needed.

    In order: `requested` (a remote name from the DVC config, a URL, or a path relative to
    `root`), $KDFLOW_DVC_REMOTE, the repository's default remote, `../kdflow-remote`. A URL or
    path is registered as remote 'kdflow' in .dvc/config.local (git-ignored) and made the
    default there, because `dvc repro --pull` in this checkout only pulls from the default.
    """
    from dvc.config import ConfigError
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            remotes = {name: dict(value) for name, value in repo.config["remote"].items()}
            default = repo.config["core"].get("remote")
    except ConfigError as exc:
        raise KdflowError(f"DVC config of {root} is invalid: {exc}") from None
    requested = requested or os.environ.get(REMOTE_ENV) or None
    if requested is None and default in remotes:
        return Remote(default, remotes[default]["url"])
    value = requested or DEFAULT_REMOTE
    if value in remotes:
        remote = Remote(value, remotes[value]["url"])
    else:
        url = value if "://" in value else str((root / Path(value).expanduser()).resolve())
        remote = Remote(FLOW_REMOTE_NAME, url)
    if remote.name != default or remotes.get(remote.name, {}).get("url") != remote.url:
        use_remote(root, remote)
    if "://" not in remote.url:
        Path(remote.url).mkdir(parents=True, exist_ok=True)
    return remote


# Commands still running, so a cancelled or interrupted flow can stop them (see stop_all).
_live: set[subprocess.Popen[str]] = set()
_live_lock = threading.Lock()


def run_command(
    args: list[str],
    cwd: Path,
    env: Mapping[str, str],
    on_line: Callable[[str], None] | None = None,
) -> CommandResult:
    """Run `args` (a list, never a shell string); stream its output lines to `on_line`."""
    lines: list[str] = []
    try:
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            # Its own process group: stop_all() reaches the stage DVC started, not only DVC.
            start_new_session=True,
        )
    except OSError as exc:
        return CommandResult(127, (f"cannot start {args[0]}: {exc}",))
    assert process.stdout is not None
    with _live_lock:
        _live.add(process)
    try:
        with process:
            try:
                for raw in process.stdout:
                    line = raw.rstrip()
                    lines.append(line)
                    if on_line is not None and line:
                        on_line(line)
            except BaseException:
                _stop([process])  # interrupted while it runs: take the command down with us
                raise
    finally:
        with _live_lock:
            _live.discard(process)
    return CommandResult(process.returncode, tuple(lines))


def _stop(processes: list[subprocess.Popen[str]], grace: float = 10.0) -> None:
    # SIGINT first: a kdflow stage takes it as "interrupted, outputs untouched" (stages/_cli.py).
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def stop_all() -> None:
    """Stop every command still running, with the processes it started."""
    with _live_lock:
        processes = list(_live)
    _stop(processes)


def dvc_args(*args: str) -> list[str]:
    """Return the argument list that runs the DVC of this interpreter's environment."""
    return [sys.executable, "-m", "dvc", *args]


def error_line(lines: Iterable[str]) -> str:
    """Return the most telling error line of a failed `dvc` command's output."""
    lines = [line.strip() for line in lines if line.strip()]
    dvc_errors = [line for line in lines if line.startswith("ERROR:")]
    # The stage's own message (kdflow's "…: error: …", a Python exception) says more than
    # DVC's "failed to reproduce" wrapper, so prefer the last such line before DVC's.
    first_dvc = lines.index(dvc_errors[0]) if dvc_errors else len(lines)
    own = [
        line
        for line in lines[:first_dvc]
        if "error" in line.lower() or "exception" in line.lower() or line.endswith("Error")
    ]
    if own:
        return own[-1]
    if dvc_errors:
        return dvc_errors[-1]
    return lines[-1] if lines else "no output"


def ran_stages(lines: Iterable[str]) -> list[str]:
    """Return the stages a `dvc repro` output says it ran."""
    return [m.group(1) for line in lines if (m := _RUNNING.match(line))]


def restored_stages(lines: Iterable[str]) -> list[str]:
    """Return the stages a `dvc repro` output says it restored from the run-cache."""
    return [m.group(1) for line in lines if (m := _RESTORED.match(line))]
