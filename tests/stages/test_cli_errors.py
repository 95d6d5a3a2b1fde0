"""run_stage: a write the filesystem refuses outside a staging is one line too, exit 2."""

from __future__ import annotations

import argparse
import errno
import signal
from collections.abc import Iterator

import pytest

from stages._cli import run_stage


@pytest.fixture(autouse=True)
def _keep_sigterm() -> Iterator[None]:
    """run_stage installs its SIGTERM handler; pytest's process gets its own back."""
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, handler)


def _args(debug: bool = False) -> argparse.Namespace:
    return argparse.Namespace(debug=debug, params="params.yaml")


@pytest.mark.parametrize(
    ("code", "name"), [(errno.ENOSPC, "ENOSPC"), (errno.EROFS, "EROFS"), (errno.EDQUOT, "EDQUOT")]
)
def test_a_refused_write_is_one_line_and_exit_2(capsys, code, name):
    def main(args: argparse.Namespace) -> None:
        raise OSError(code, "refused", "checkpoints/distill@x.pt")

    assert run_stage("distill", main, _args()) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        f"kdflow distill: error: cannot write checkpoints/distill@x.pt: refused ({name}); "
    )


def test_debug_adds_the_traceback_before_the_line(capsys):
    def main(args: argparse.Namespace) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "mlflow.db")

    assert run_stage("prepare", main, _args(debug=True)) == 2

    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1].startswith("kdflow prepare: error: cannot write mlflow.db: ")


def test_other_os_errors_are_bugs_and_keep_their_traceback():
    def main(args: argparse.Namespace) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "x")

    with pytest.raises(FileNotFoundError):
        run_stage("prepare", main, _args())
