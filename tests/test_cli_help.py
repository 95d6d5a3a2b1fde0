"""`kdflow --help` and each command's help say what to type, and `make help` lists the targets."""

from __future__ import annotations

import re
import subprocess

from typer.testing import CliRunner

from kdflow.cli import app
from tests.helpers import REPO


def test_every_command_s_options_show_plain_metavars_and_help() -> None:
    runner = CliRunner()
    for command in ("audit", "preset", "readme"):
        done = runner.invoke(app, [command, "--help"], env={"COLUMNS": "120"})
        assert done.exit_code == 0, done.output
        # Every option names its value (typer still prints a list argument's type itself).
        options = done.output.split("Options:", 1)[1]
        assert not re.search(r"<[a-z\[\]]+>", options), (command, options)
    audit = runner.invoke(app, ["audit", "--help"], env={"COLUMNS": "120"}).output
    assert re.search(r"--rerun\s+STAGE\s+stage to re-execute", audit)


def test_make_help_lists_every_target_with_a_line_of_help() -> None:
    done = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = re.findall(r"^  make (\S+)\s+\S", done.stdout, flags=re.MULTILINE)
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY: (.+)$", makefile, flags=re.MULTILINE)
    assert phony is not None
    assert sorted(listed) == sorted(phony.group(1).split())
