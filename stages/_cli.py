"""What every stage CLI shares: arguments, logging, and turning errors into one line."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable

from kdflow.errors import KdflowError


def stage_parser(stage: str, description: str) -> argparse.ArgumentParser:
    """Return an argument parser with the options every stage takes."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser


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
    try:
        main(args)
    except KdflowError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"kdflow {stage}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kdflow {stage}: interrupted; outputs untouched, rerun to resume", file=sys.stderr)
        return 130
    return 0
