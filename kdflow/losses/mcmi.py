"""MCMI teacher loss (docs/algorithms.md): L = CE(z, y) − λ·(1/B) Σ_i KL(P_i ‖ Q_{y_i})."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdflow.metrics.cmi import PROB_CLAMP


def cmi_term(
    logits: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, floor: float = 0.0
) -> torch.Tensor:
    """Return the scalar (1/B) Σ_i KL(P_i ‖ Q_{y_i}), differentiable in P only."""
    # At least float32: a 1e-12 clamp underflows to 0 in float16 and the log would be -inf.
    compute_dtype = torch.promote_types(logits.dtype, torch.float32)
    # log_softmax instead of log(clamp(P)) keeps the exact gradient for tiny probabilities.
    log_probs = F.log_softmax(logits.to(compute_dtype), dim=-1)  # B×C
    # Q is a constant of the fine-tune; the floor caps −log Q on near-one-hot centroids,
    # which otherwise rewards moving mass onto the non-target classes without bound.
    sample_centroids = centroids.detach().to(log_probs)[labels.long()]  # B×C
    log_centroids = sample_centroids.clamp(min=max(floor, PROB_CLAMP)).log()
    return (log_probs.exp() * (log_probs - log_centroids)).sum(dim=-1).mean()


def mcmi_loss_terms(
    logits: torch.Tensor,
    labels: torch.Tensor,
    centroids: torch.Tensor,
    lam: float,
    floor: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Return the weighted MCMI terms {"ce": CE, "cmi": −λ·cmi_term}."""
    return {
        "ce": F.cross_entropy(logits, labels.long()),
        "cmi": -lam * cmi_term(logits, labels, centroids, floor),
    }
