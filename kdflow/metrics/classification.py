"""Classification figures: accuracy, confusion matrix, per-class accuracy, ECE."""

from __future__ import annotations

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the top-1 accuracy of `logits` (N×C) against `labels` (N) as a fraction in [0, 1]."""
    return (logits.argmax(dim=-1) == labels).double().mean().item()


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Return the C×C int64 counts: entry [t, p] = samples of true class t predicted as p."""
    flat_index = labels.long() * num_classes + preds.long()
    counts = torch.bincount(flat_index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Return each class's accuracy from the confusion matrix; nan for a class with no samples."""
    matrix = confusion_matrix(logits.argmax(dim=-1), labels, num_classes).double()
    class_counts = matrix.sum(dim=1)
    # An absent class has no accuracy; nan keeps it distinguishable from a class scored 0%.
    class_accuracy = torch.where(
        class_counts > 0, matrix.diagonal() / class_counts.clamp(min=1), float("nan")
    )
    return class_accuracy.tolist()


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15
) -> float:
    """Return the ECE Σ_b (n_b/N)·|acc_b − conf_b| over equal-width confidence bins on (0, 1]."""
    confidence, preds = probs.double().max(dim=-1)
    correct = (preds == labels).double()
    bin_edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=probs.device)
    # right=False puts a confidence equal to an edge in the bin below it: bins are (lo, hi].
    bin_index = torch.bucketize(confidence, bin_edges[1:-1])
    confidence_sum = torch.bincount(bin_index, weights=confidence, minlength=n_bins)
    correct_sum = torch.bincount(bin_index, weights=correct, minlength=n_bins)
    # (n_b/N)·|acc_b − conf_b| = |Σ_b correct − Σ_b conf| / N, which needs no per-bin division
    # and so no special case for empty bins.
    return ((correct_sum - confidence_sum).abs().sum() / confidence.numel()).item()


def omitted_accuracy(logits: torch.Tensor, labels: torch.Tensor, omit: list[int]) -> float:
    """Return the accuracy on the samples whose label is in `omit`, from all samples' logits."""
    mask = torch.isin(labels, torch.tensor(omit, device=labels.device))
    return float((logits[mask].argmax(1) == labels[mask]).float().mean())
