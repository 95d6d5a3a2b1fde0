"""The KD throughput benchmark runs both sides for both pairs and ends with the two ratio lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_kd_throughput_prints_both_rates_and_their_ratio_for_each_pair():
    done = subprocess.run(
        [sys.executable, "benchmarks/kd_throughput.py", "--samples", "66", "--epochs", "1"]
        + ["--workers", "0"],  # 64 + 2 images: the short last batch is trained too
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    *rows, small, large = done.stdout.splitlines()
    results = [json.loads(row) for row in rows]
    assert [r["pair"] for r in results] == ["resnet20->resnet8", "resnet32x4->resnet8x4"]
    for r in results:
        assert r["samples"] == 66 and r["compile"] is False
        assert r["reference_samples_per_s"] > 0 and r["kdflow_samples_per_s"] > 0
        want = r["kdflow_samples_per_s"] / r["reference_samples_per_s"]
        assert r["ratio"] == pytest.approx(want, abs=0.006)  # rounded to 2 places
    assert small == f"ratio resnet20->resnet8: {results[0]['ratio']}"
    assert large == f"ratio resnet32x4->resnet8x4: {results[1]['ratio']}"
