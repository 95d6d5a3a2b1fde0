"""What every stage CLI shares: arguments, logging, and turning errors into one line."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from kdflow.errors import KdflowError
from kdflow.io import as_write_error, write_error_message

SIGTERM_EXIT = 128 + signal.SIGTERM
# Tests set this to a folder: each stage run then writes what it read there (see _traced).
TRACE_ENV = "KDFLOW_TRACE_DIR"


class StageParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one `kdflow <stage>: error:` line, exit 2."""

    def __init__(self, stage: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage = stage

    def error(self, message: str) -> NoReturn:
        """Print the usage error as one line (argparse prints the usage block first)."""
        self.exit(2, f"kdflow {self.stage}: error: {message}; see `{self.prog} --help`\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwinds like Ctrl-C, so temp files are removed and runs are closed."""


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    """Return an argument parser with the options every stage takes."""
    parser = StageParser(stage, prog=f"python -m stages.{stage}", description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Python's default SIGTERM ends the process at once: no `finally`, so a half-written temp
    # file would stay beside its output and the MLflow run would stay RUNNING. A second
    # SIGTERM during the clean-up is ignored; SIGKILL still ends the process at once.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def _traced(
    main: Callable[[argparse.Namespace], None], args: argparse.Namespace, out: Path
) -> None:
    """Run main, then write which params keys, repository modules and files it read."""
    from kdflow.config import trace_params

    root = Path.cwd().resolve()
    opened: set[str] = set()

    def on_open(event: str, details: tuple[Any, ...]) -> None:
        if event != "open" or not isinstance(details[0], str | Path):
            return
        path, mode, flags = details
        reading = "r" in mode and "+" not in mode if isinstance(mode, str) else flags & 3 == 0
        if reading:
            opened.add(str(details[0]))

    sys.addaudithook(on_open)
    with trace_params() as params:
        main(args)
    modules = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
    record = {
        "argv": sys.argv[1:],
        "params": sorted(params.keys),
        "modules": _inside(root, {m for m in modules if m}),
        "read": _inside(root, opened),
    }
    out.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(json.dumps(record["argv"]).encode()).hexdigest()[:12]
    (out / f"{Path(sys.argv[0]).stem}-{name}.json").write_text(json.dumps(record, indent=1))


def _inside(root: Path, paths: set[str]) -> list[str]:
    """Return the paths under `root`, relative to it, outside the venv and caches."""
    inside = set()
    for path in paths:
        resolved = Path(path).resolve()
        # Some libraries name modules after made-up relative files; only real files count.
        if resolved.is_relative_to(root) and resolved.is_file():
            relative = resolved.relative_to(root).as_posix()
            if (
                not relative.startswith((".venv/", ".dvc/", ".git/"))
                and "__pycache__" not in relative
            ):
                inside.add(relative)
    return sorted(inside)


def run_stage(
    stage: str, main: Callable[[argparse.Namespace], None], args: argparse.Namespace
) -> int:
    """Run a stage's main; return its exit code, printing one line for a user error."""
    # Third-party libraries log at WARNING and above; kdflow's own progress at INFO.
    # A stage runs as `python -m stages.NAME`, so its own logger is "__main__".
    ours = ("kdflow", "stages", "__main__")
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for name in ours:
        logging.getLogger(name).setLevel(logging.INFO)
    # Some libraries pin their loggers to INFO (Great Expectations); only kdflow's INFO shows.
    for handler in logging.getLogger().handlers:
        handler.addFilter(
            lambda record: record.levelno >= logging.WARNING or record.name.split(".")[0] in ours
        )
    signal.signal(signal.SIGTERM, _terminate)
    trace_dir = os.environ.get(TRACE_ENV)
    try:
        if trace_dir:
            _traced(main, args, Path(trace_dir))
        else:
            main(args)
    except KdflowError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"kdflow {stage}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A write outside staged outputs (checkpoint, MLflow store) the filesystem refused.
        if as_write_error(exc) is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"kdflow {stage}: error: {write_error_message(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print(
            f"kdflow {stage}: terminated (SIGTERM); outputs untouched, rerun to resume",
            file=sys.stderr,
        )
        return SIGTERM_EXIT
    except KeyboardInterrupt:
        print(f"kdflow {stage}: interrupted; outputs untouched, rerun to resume", file=sys.stderr)
        return 130
    return 0
