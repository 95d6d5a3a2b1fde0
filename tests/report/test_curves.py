"""Students' learning curves: the mean over seeds per cell, and the long-form table."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdflow.errors import KdflowError
from kdflow.report.curves import curves_tsv, read_curve, student_curves
from tests.report.test_tables import _student


def _write(plots: Path, record: dict, val_acc: list[float]) -> None:
    path = plots / f"{record['name']}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{e + 1}\t0.05\t{v}\t1.0" for e, v in enumerate(val_acc)]
    path.write_text("\n".join(["epoch\tlr\tval_acc\ttrain_loss", *rows]) + "\n")


def test_curves_average_each_cell_over_its_seeds_and_skip_other_models(tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    kd0, kd1 = _student("mll", "kd", "full", 0), _student("mll", "kd", "full", 1)
    base = _student("none", "none", "full", 0)
    _write(plots, kd0, [0.5, 0.7, 0.9])
    _write(plots, kd1, [0.3, 0.5, 0.6])
    _write(plots, base, [0.2, 0.4])
    teacher = {"name": "teacher/mll", "kind": "teacher"}  # has no student curve: ignored

    curves = student_curves([kd0, kd1, base, teacher], plots)

    assert list(curves) == [("mll", "kd", "full"), ("none", "none", "full")]
    assert curves[("mll", "kd", "full")] == pytest.approx([0.4, 0.6, 0.75])
    assert curves[("none", "none", "full")] == pytest.approx([0.2, 0.4])
    assert curves_tsv(curves).splitlines() == [
        "epoch\tval_acc\tseries",
        "1\t0.4\tmll-kd-full",
        "2\t0.6\tmll-kd-full",
        "3\t0.75\tmll-kd-full",
        "1\t0.2\tno teacher-full",
        "2\t0.4\tno teacher-full",
    ]


def test_a_missing_or_foreign_table_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(KdflowError, match=r"missing\.tsv not found; rerun the stage"):
        read_curve(tmp_path / "missing.tsv")
    other = tmp_path / "other.tsv"
    other.write_text("epoch\tloss\n1\t0.5\n")
    with pytest.raises(KdflowError, match="no `val_acc` column"):
        read_curve(other)
