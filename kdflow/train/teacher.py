"""MLL and MCMI teachers (ALGORITHMS §1 and §3): their objectives and selection rules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.data.tensors import Split
from kdflow.losses.mcmi import mcmi_loss_terms
from kdflow.metrics import class_centroids
from kdflow.train.trainer import Selector, best_val_accuracy, predict


def cross_entropy_objective(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, epoch: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return the logits and {"ce": mean cross-entropy}: the MLL objective (§1)."""
    logits = model(x)
    return logits, {"ce": F.cross_entropy(logits, y)}


def compute_centroids(model: nn.Module, split: Split, num_classes: int) -> torch.Tensor:
    """Return the C×C class centroids Q of the model's softmax outputs on `split` (§2)."""
    probs = predict(model, split).softmax(dim=1)
    return class_centroids(probs, split.y, num_classes).float()


class McmiObjective:
    """CE − λ·(1/B)Σ KL(P_i ‖ Q_{y_i}) with constant centroids Q (§3)."""

    def __init__(self, centroids: torch.Tensor, lam: float, floor: float) -> None:
        self.centroids = centroids  # C×C, no gradient
        self.lam = lam
        self.floor = floor

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the logits and {"ce": CE, "cmi": −λ·CMI term}."""
        logits = model(x)
        return logits, mcmi_loss_terms(logits, y, self.centroids, self.lam, self.floor)


def cmi_within_accuracy(reference_acc: float, max_drop: float) -> Selector:
    """Return a selector: highest val CMI among epochs with val_acc ≥ reference − max_drop.

    When no epoch qualifies it falls back to the best validation accuracy.
    """

    def select(history: list[dict[str, float]]) -> int:
        eligible = [
            i for i, row in enumerate(history) if row["val_acc"] >= reference_acc - max_drop
        ]
        if not eligible:
            return best_val_accuracy(history)
        return max(eligible, key=lambda i: (history[i]["val_cmi"], -i))

    return select
