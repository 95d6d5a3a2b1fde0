"""What every stage CLI shares: arguments, logging, and turning errors into one line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

from kdflow.errors import KdflowError

SIGTERM_EXIT = 128 + signal.SIGTERM


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
    try:
        main(args)
    except KdflowError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"kdflow {stage}: error: {exc}", file=sys.stderr)
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
