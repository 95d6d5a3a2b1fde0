"""The GPU check's CPU-checkable parts: it runs the fast path end to end and refuses no-CUDA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_gpu_check_runs_the_fast_path_and_projects_a_paper_run_on_cpu():
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu"]
        + ["--samples", "64", "--batch-size", "32", "--epochs", "4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row["pair"] for row in rows] == ["resnet20->resnet8", "resnet32x4->resnet8x4"]
    for row in rows:
        assert row["device"] == "cpu" and row["batch_size"] == 32
        assert row["steps_timed"] == 4  # 2 timed epochs of 64 images in batches of 32
        assert row["samples_per_second"] > 0
        # 240 epochs of 50,000 images at the measured rate, in minutes (rounded to 0.1).
        projected = 240 * 50_000 / row["samples_per_second"] / 60
        assert row["projected_240_epochs_50k_minutes"] == pytest.approx(projected, rel=0.01)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_gpu_check_script_refuses_a_machine_without_cuda_in_one_line():
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, timeout=120
    )

    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "gpu_check.sh: no CUDA device visible to torch; run it on a GPU worker"
    ]
