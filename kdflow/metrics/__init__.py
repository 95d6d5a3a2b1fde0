"""Evaluation figures (docs/algorithms.md); `summarize` is the one call a stage needs."""

from kdflow.metrics.classification import (
    accuracy,
    confusion_matrix,
    expected_calibration_error,
    omitted_accuracy,
    per_class_accuracy,
)
from kdflow.metrics.cmi import (
    CMIAccumulator,
    class_centroids,
    conditional_mutual_information,
    summarize,
)

__all__ = [
    "CMIAccumulator",
    "accuracy",
    "class_centroids",
    "conditional_mutual_information",
    "confusion_matrix",
    "expected_calibration_error",
    "omitted_accuracy",
    "per_class_accuracy",
    "summarize",
]
