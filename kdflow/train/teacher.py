"""MLL and MCMI teachers (docs/algorithms.md): their objectives and selection rules."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdflow.config import McmiParams
from kdflow.data.tensors import PreparedData, Split
from kdflow.errors import KdflowError
from kdflow.losses.mcmi import mcmi_loss_terms
from kdflow.metrics import class_centroids
from kdflow.train.protocols import fewshot_indices
from kdflow.train.trainer import Selector, best_val_accuracy, predict


def cross_entropy_objective(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, epoch: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return the logits and {"ce": mean cross-entropy}: the MLL objective (§1)."""
    logits = model(x)
    return logits, {"ce": F.cross_entropy(logits, y)}


def mcmi_splits(
    train: Split, source: str, holdout_fraction: float, seed: int
) -> tuple[Split, Split]:
    """Return (the split the centroids Q come from, the split the MCMI fine-tune trains on).

    `train` computes Q on the training split itself, as the paper does; `holdout` carves a
    stratified, seeded slice of train for Q and fine-tunes on the rest, so the slice enters
    nothing else. Neither touches the validation split: it selects the checkpoint, so its
    labels must stay out of every training objective.
    """
    if source == "train":
        return train, train
    if source != "holdout":
        raise KdflowError(f"mcmi.centroid_split {source!r} is unknown; use train or holdout")
    labels = train.y.cpu().numpy()
    carved = fewshot_indices(labels, holdout_fraction, seed)
    kept = np.setdiff1d(np.arange(len(labels)), carved)
    device = train.y.device
    return (
        train.subset(torch.from_numpy(carved).to(device)),
        train.subset(torch.from_numpy(kept).to(device)),
    )


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


def build_mcmi_objective(
    model: nn.Module, data: PreparedData, params: McmiParams, seed: int
) -> tuple[McmiObjective, Split, Split]:
    """Return the MCMI objective with the starting model's centroids, their split, and the
    split the fine-tune trains on: built from training data only, never from validation."""
    centroid_split, train = mcmi_splits(
        data.train, params.centroid_split, params.holdout_fraction, seed
    )
    centroids = compute_centroids(model, centroid_split, data.num_classes)
    return McmiObjective(centroids, params.lam, params.centroid_floor), centroid_split, train


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
