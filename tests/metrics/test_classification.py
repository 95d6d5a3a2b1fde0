import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from kdflow.metrics.classification import (
    accuracy,
    confusion_matrix,
    expected_calibration_error,
    per_class_accuracy,
)

NUM_CLASSES = 7


@pytest.fixture
def random_predictions() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, NUM_CLASSES, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (300,), generator=generator)
    # Class 5 gets no sample so the per-class result must report it as nan, not 0.
    labels[labels == 5] = 4
    return logits, labels


def test_accuracy_matches_sklearn(random_predictions):
    logits, labels = random_predictions
    expected = accuracy_score(labels.numpy(), logits.argmax(dim=1).numpy())
    assert accuracy(logits, labels) == pytest.approx(expected, abs=1e-12)


def test_confusion_matrix_matches_sklearn(random_predictions):
    logits, labels = random_predictions
    preds = logits.argmax(dim=1)
    expected = sklearn_confusion_matrix(
        labels.numpy(), preds.numpy(), labels=list(range(NUM_CLASSES))
    )
    np.testing.assert_array_equal(confusion_matrix(preds, labels, NUM_CLASSES).numpy(), expected)


def test_per_class_accuracy_matches_numpy(random_predictions):
    logits, labels = random_predictions
    y_true, y_pred = labels.numpy(), logits.argmax(dim=1).numpy()
    expected = [
        float(np.mean(y_pred[y_true == c] == c)) if np.any(y_true == c) else math.nan
        for c in range(NUM_CLASSES)
    ]
    result = per_class_accuracy(logits, labels, NUM_CLASSES)
    assert len(result) == NUM_CLASSES
    assert math.isnan(result[5])
    np.testing.assert_allclose(result, expected, atol=1e-12)


def test_ece_hand_example():
    # 5 bins: (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]; the true label is class 0 throughout.
    probs = torch.tensor(
        [
            [0.90, 0.05, 0.05],  # conf .90, correct -> bin 4
            [0.10, 0.85, 0.05],  # conf .85, wrong   -> bin 4
            [0.50, 0.30, 0.20],  # conf .50, correct -> bin 2
            [0.45, 0.30, 0.25],  # conf .45, correct -> bin 2
            [0.20, 0.10, 0.70],  # conf .70, wrong   -> bin 3
        ]
    )
    labels = torch.zeros(5, dtype=torch.long)
    bin4 = (2 / 5) * abs((1 + 0) / 2 - (0.90 + 0.85) / 2)
    bin2 = (2 / 5) * abs((1 + 1) / 2 - (0.50 + 0.45) / 2)
    bin3 = (1 / 5) * abs(0 / 1 - 0.70 / 1)
    expected = bin4 + bin2 + bin3
    assert expected == pytest.approx(0.5)
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(expected, abs=1e-6)


def test_ece_puts_confidence_one_in_last_bin_and_is_zero_when_calibrated():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # Both samples wrong with confidence 1: one bin, |0 − 1| = 1.
    assert expected_calibration_error(probs, 1 - labels) == pytest.approx(1.0, abs=1e-12)
