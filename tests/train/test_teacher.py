"""Teacher objectives and selection rules in docs/algorithms.md."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from kdflow.config import McmiParams
from kdflow.data.tensors import PreparedData, Split
from kdflow.models import build_model
from kdflow.train.teacher import (
    McmiObjective,
    build_mcmi_objective,
    cmi_within_accuracy,
    compute_centroids,
    cross_entropy_objective,
)


def rows(*acc_cmi: tuple[float, float]) -> list[dict[str, float]]:
    return [
        {"epoch": i + 1, "val_acc": acc, "val_cmi": cmi} for i, (acc, cmi) in enumerate(acc_cmi)
    ]


def test_cmi_within_accuracy_picks_highest_cmi_among_eligible_epochs():
    select = cmi_within_accuracy(reference_acc=0.75, max_drop=0.25)  # eligible: val_acc ≥ 0.5
    history = rows((0.8, 0.10), (0.4, 0.90), (0.5, 0.30), (0.7, 0.20))

    assert select(history) == 2  # 0.90 is higher, but its accuracy dropped too far


def test_cmi_within_accuracy_takes_the_first_of_equal_cmi():
    select = cmi_within_accuracy(reference_acc=0.75, max_drop=0.25)

    assert select(rows((0.4, 0.9), (0.6, 0.3), (0.9, 0.3))) == 1


def test_cmi_within_accuracy_falls_back_to_best_accuracy():
    select = cmi_within_accuracy(reference_acc=0.9, max_drop=0.01)
    history = rows((0.5, 0.4), (0.7, 0.1), (0.6, 0.8), (0.7, 0.2))

    assert select(history) == 1  # none within 0.01 of 0.9: best accuracy, first on ties


def _batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("mlp", (1, 12), 5).double().eval()
    x = torch.randn(32, 1, 12, dtype=torch.float64)
    y = torch.arange(32) % 5
    centroids = torch.rand(5, 5, dtype=torch.float64) ** 4  # some entries below the floor
    centroids[0, 3] = 0.0
    return model, x, y, centroids / centroids.sum(dim=1, keepdim=True)


@pytest.mark.parametrize("floor", [0.0, 1e-2])
def test_mcmi_objective_terms_are_ce_and_minus_lambda_cmi(floor):
    model, x, y, centroids = _batch()
    objective = McmiObjective(centroids, lam=0.15, floor=floor)

    logits, terms = objective(model, x, y, torch.arange(32), epoch=0)

    with torch.no_grad():
        expected_logits = model(x)
    assert torch.equal(logits.detach(), expected_logits)
    assert set(terms) == {"ce", "cmi"}
    probs = expected_logits.softmax(dim=1).tolist()
    ce = -sum(math.log(probs[i][int(y[i])]) for i in range(32)) / 32
    kl = [
        sum(
            p * (math.log(p) - math.log(max(float(centroids[y[i], k]), floor, 1e-12)))
            for k, p in enumerate(probs[i])
        )
        for i in range(32)
    ]
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-10)
    assert terms["cmi"].item() == pytest.approx(-0.15 * sum(kl) / 32, rel=1e-8)
    assert terms["cmi"].item() < 0  # a KL is non-negative, so the term rewards higher CMI


def test_cross_entropy_objective_is_mean_cross_entropy():
    model, x, y, _ = _batch()

    logits, terms = cross_entropy_objective(model, x, y, torch.arange(32), 0)

    assert set(terms) == {"ce"}
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-12)
    assert logits.shape == (32, 5)


def test_compute_centroids_are_class_means_of_softmax():
    model, x, y, _ = _batch()
    model = model.float()
    split = Split(x.float(), y, torch.arange(32))

    centroids = compute_centroids(model, split, 5)

    with torch.no_grad():
        probs = model(x.float()).softmax(dim=1)
    for c in range(5):
        mean = probs[y == c].mean(dim=0)
        assert torch.allclose(centroids[c], mean / mean.sum(), atol=1e-6)
    assert torch.allclose(centroids.sum(dim=1), torch.ones(5), atol=1e-6)


def _prepared(seed: int = 0) -> PreparedData:
    generator = torch.Generator().manual_seed(seed)

    def split(n: int, offset: int) -> Split:
        x = torch.randn(n, 1, 12, generator=generator)
        y = torch.arange(n) % 5
        return Split(x, y, torch.arange(offset, offset + n))

    return PreparedData(split(60, 0), split(20, 60), split(20, 80), {"num_classes": 5})


def _training_loss(objective: McmiObjective, model: torch.nn.Module, train: Split) -> float:
    x, y = train.batch(slice(None)), train.y
    _, terms = objective(model, x, y, torch.arange(len(y)), 0)
    return float(sum(t.detach() for t in terms.values()))


@pytest.mark.parametrize("source", ["train", "holdout"])
def test_validation_labels_do_not_enter_the_mcmi_objective(source: str) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (1, 12), 5).eval()
    params = McmiParams(centroid_split=source, holdout_fraction=0.2)
    data = _prepared()
    relabelled = PreparedData(
        data.train, Split(data.val.x, (data.val.y + 1) % 5, data.val.ids), data.test, data.meta
    )

    objective, centroid_split, train = build_mcmi_objective(model, data, params, seed=0)
    other, _, other_train = build_mcmi_objective(model, relabelled, params, seed=0)

    assert torch.equal(objective.centroids, other.centroids)
    assert torch.equal(train.ids, other_train.ids)
    assert _training_loss(objective, model, train) == _training_loss(other, model, other_train)
    # The centroids come from training rows only, and a holdout slice is left out of training.
    assert set(centroid_split.ids.tolist()) <= set(data.train.ids.tolist())
    if source == "holdout":
        assert not set(centroid_split.ids.tolist()) & set(train.ids.tolist())
        assert len(centroid_split) + len(train) == len(data.train)
        assert sorted(torch.bincount(centroid_split.y).tolist()) == [2, 2, 2, 2, 2]
    else:
        assert torch.equal(train.ids, data.train.ids)


def test_the_validation_split_is_no_centroid_source() -> None:
    with pytest.raises(ValidationError):
        McmiParams(centroid_split="val")
