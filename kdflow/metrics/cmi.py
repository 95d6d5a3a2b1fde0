"""Conditional mutual information of a classifier (docs/algorithms.md) and the one-call evaluation
summary of §6 that every stage uses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdflow.metrics.classification import (
    accuracy,
    expected_calibration_error,
    per_class_accuracy,
)

PROB_CLAMP = 1e-12


def _centroids_from_sums(class_prob_sums: torch.Tensor, class_counts: torch.Tensor) -> torch.Tensor:
    """Return C×C centroids from per-class sums of P; rows sum to 1, absent classes uniform."""
    num_classes = class_prob_sums.shape[0]
    # Dividing by the row sum rather than the count both averages and renormalises, so
    # probabilities that do not sum exactly to 1 (low precision) still give a distribution.
    row_sums = class_prob_sums.sum(dim=1, keepdim=True)
    centroids = class_prob_sums / row_sums.clamp(min=PROB_CLAMP)
    uniform = torch.full_like(centroids, 1.0 / num_classes)
    return torch.where((class_counts > 0).unsqueeze(1), centroids, uniform)


def _class_sums(
    probs: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return float64 per-class Σ P (C×C), Σ Σ P·log P (C) and sample counts (C) of a batch."""
    probs = probs.double()
    labels = labels.long()
    prob_sums = probs.new_zeros(num_classes, num_classes).index_add_(0, labels, probs)
    neg_entropies = (probs * probs.clamp(min=PROB_CLAMP).log()).sum(dim=1)
    neg_entropy_sums = probs.new_zeros(num_classes).index_add_(0, labels, neg_entropies)
    counts = torch.bincount(labels, minlength=num_classes)
    return prob_sums, neg_entropy_sums, counts


def class_centroids(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Return the C×C centroids Q (row c = mean P over class c, renormalised; absent: uniform)."""
    prob_sums, _, counts = _class_sums(probs, labels, num_classes)
    return _centroids_from_sums(prob_sums, counts).to(probs.dtype)


def conditional_mutual_information(
    probs: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> float:
    """Return the empirical CMI (1/N) Σ_i KL(P_i ‖ Q_{y_i}) in nats, by the full-batch formula."""
    probs = probs.double()
    centroids = class_centroids(probs, labels, num_classes)
    log_probs = probs.clamp(min=PROB_CLAMP).log()
    log_centroids = centroids[labels.long()].clamp(min=PROB_CLAMP).log()
    return (probs * (log_probs - log_centroids)).sum(dim=1).mean().item()


class CMIAccumulator:
    """Streaming CMI and class centroids over batches, in one pass (docs/algorithms.md)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.prob_sums = torch.zeros(num_classes, num_classes, dtype=torch.float64)  # C×C
        self.neg_entropy_sums = torch.zeros(num_classes, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of probabilities (B×C) and labels (B); returns nothing."""
        prob_sums, neg_entropy_sums, counts = _class_sums(probs, labels, self.num_classes)
        # The running sums live on the data's device, so batches are never copied to the host.
        self.prob_sums = self.prob_sums.to(prob_sums.device) + prob_sums
        self.neg_entropy_sums = self.neg_entropy_sums.to(prob_sums.device) + neg_entropy_sums
        self.counts = self.counts.to(prob_sums.device) + counts

    def centroids(self) -> torch.Tensor:
        """Return the float64 C×C class centroids of everything seen so far."""
        return _centroids_from_sums(self.prob_sums, self.counts)

    def compute(self) -> float:
        """Return the CMI in nats of everything seen so far."""
        total = int(self.counts.sum())
        if total == 0:
            raise ValueError("CMIAccumulator.compute() called before any sample was added")
        log_centroids = self.centroids().clamp(min=PROB_CLAMP).log()
        # Σ_{i∈c} Σ_k P_ik log Q_ck = Σ_k (Σ_{i∈c} P_ik) log Q_ck. Using the sums themselves
        # (= n_c·Q_c when rows of P sum to 1) keeps this identical to the full-batch formula.
        cross_term = (self.prob_sums * log_centroids).sum()
        return ((self.neg_entropy_sums.sum() - cross_term) / total).item()


def summarize(
    logits: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict[str, float | list[float]]:
    """Return {"acc", "ece", "nll", "cmi", "per_class_acc"} of a model's logits (N×C)."""
    logits = logits.detach().double()
    probs = logits.softmax(dim=-1)
    return {
        "acc": accuracy(logits, labels),
        "ece": expected_calibration_error(probs, labels),
        "nll": F.cross_entropy(logits, labels.long()).item(),
        "cmi": conditional_mutual_information(probs, labels, num_classes),
        "per_class_acc": per_class_accuracy(logits, labels, num_classes),
    }
