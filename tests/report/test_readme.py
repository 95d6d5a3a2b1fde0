"""The README's results block is cut from the report, never typed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdflow.errors import KdflowError
from kdflow.readme import (
    BEGIN,
    END,
    figures_of,
    result_sections,
    results_block,
    splice,
    update_readme,
)
from tests.helpers import REPO

REPORT = """# kdflow report

Data: **mnist1d**.

## Teachers

| teacher | test acc |
|---|---|
| MLL | 97.00 |

![teachers](figures/teachers.png)

## Students

| method | MLL teacher |

## Provenance

- params hash: `abc`
"""


def test_the_block_holds_the_result_sections_only_with_their_figures_moved() -> None:
    block = results_block(REPORT, "0123abcd")

    assert block.startswith(BEGIN) and block.endswith(END)
    assert "at commit `0123abcd`" in block
    assert re.findall(r"^### (.+)$", block, flags=re.MULTILINE) == ["Teachers", "Students"]
    assert "Provenance" not in block and "Data: **mnist1d**" not in block
    assert "![teachers](docs/figures/teachers.png)" in block
    assert figures_of(block) == ["teachers.png"]


def test_splicing_replaces_only_the_marked_text_and_is_idempotent() -> None:
    readme = f"# title\n\nbefore\n\n{BEGIN}\nold numbers\n{END}\n\nafter\n"
    block = results_block(REPORT, "c0ffee")

    once = splice(readme, block)

    assert once.startswith("# title\n\nbefore\n\n") and once.endswith("\n\nafter\n")
    assert "old numbers" not in once and "| MLL | 97.00 |" in once
    assert splice(once, block) == once
    with pytest.raises(KdflowError, match="lacks the results markers"):
        splice("# no markers\n", block)
    with pytest.raises(KdflowError, match="no result sections"):
        result_sections("# kdflow report\n\n## Provenance\n")


def test_update_readme_copies_the_figures_and_names_a_missing_report(tmp_path: Path) -> None:
    with pytest.raises(KdflowError, match="report.md not found; run `make repro`"):
        update_readme(tmp_path, "c0ffee")
    (tmp_path / "reports" / "figures").mkdir(parents=True)
    (tmp_path / "reports" / "report.md").write_text(REPORT)
    (tmp_path / "reports" / "figures" / "teachers.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "README.md").write_text(f"intro\n{BEGIN}\n{END}\n")

    copied = update_readme(tmp_path, "c0ffee")

    assert copied == [tmp_path / "docs" / "figures" / "teachers.png"]
    assert copied[0].read_bytes() == b"\x89PNG fake"
    assert "| MLL | 97.00 |" in (tmp_path / "README.md").read_text()


def test_the_repository_readme_has_one_generated_block_whose_figures_exist() -> None:
    readme = (REPO / "README.md").read_text()
    assert readme.count(BEGIN) == readme.count(END) == 1
    block = readme[readme.index(BEGIN) : readme.index(END) + len(END)]
    assert re.search(r"at commit `[0-9a-f]{7,40}`", block)
    for name in figures_of(block):
        assert (REPO / "docs" / "figures" / name).is_file(), name
