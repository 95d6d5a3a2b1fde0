"""Output checks before anything is written: logits, probabilities, metric ranges."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdflow.errors import KdflowError
from kdflow.train.outputs import check_logits, check_metrics, write_training_outputs


def test_finite_logits_pass_both_checks():
    assert check_logits(torch.randn(8, 10), "m.json") == [
        "logits finite",
        "probabilities sum to 1 within 1e-5",
    ]


def test_a_nan_logit_is_refused_naming_the_row():
    logits = torch.randn(8, 10)
    logits[3, 2] = float("nan")

    with pytest.raises(KdflowError, match=r"1 sample\(s\) have non-finite logits \(rows \[3\]\)"):
        check_logits(logits, "m.json")


def test_an_infinite_logit_is_refused():
    logits = torch.zeros(4, 3)
    logits[0, 0] = float("inf")

    with pytest.raises(KdflowError, match="non-finite logits"):
        check_logits(logits, "m.json")


def test_metrics_out_of_range_are_refused_and_nothing_is_written(tmp_path):
    targets = {
        "model_path": tmp_path / "m.pt",
        "metrics_path": tmp_path / "m.json",
        "plots_path": tmp_path / "m.tsv",
    }
    bad = {"test_acc": 1.2, "test_cmi": 0.1, "per_class_acc": [1.0, 1.0]}

    with pytest.raises(KdflowError, match=r"test_acc = 1\.2 is outside \[0, 1\]"):
        write_training_outputs(
            model=nn.Linear(2, 2),
            model_meta={"arch": "mlp", "input_shape": [2], "num_classes": 2, "data_hash": "x"},
            metrics=bad,
            history=[{"epoch": 1, "loss": 0.5}],
            num_classes=2,
            **targets,
        )
    assert not any(p.exists() for p in targets.values())


def test_negative_cmi_and_wrong_per_class_length_are_refused():
    with pytest.raises(KdflowError, match="test_cmi = -0.5 is negative"):
        check_metrics({"test_cmi": -0.5}, 10, "m.json")
    with pytest.raises(KdflowError, match="per_class_acc has 3 entries, expected 10"):
        check_metrics({"per_class_acc": [1.0, 1.0, 1.0]}, 10, "m.json")
