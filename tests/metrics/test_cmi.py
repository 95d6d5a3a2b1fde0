import math

import pytest
import torch

from kdflow.metrics.classification import accuracy
from kdflow.metrics.cmi import (
    CMIAccumulator,
    class_centroids,
    conditional_mutual_information,
    summarize,
)


def random_probs(num_samples: int, num_classes: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(num_samples, num_classes, generator=generator)
    return logits.double().softmax(dim=1)


def test_cmi_hand_example_two_classes_four_samples():
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])
    labels = torch.tensor([0, 0, 1, 1])
    # Centroids: Q_0 = mean([.9,.1], [.7,.3]) = [.8, .2]; Q_1 = mean([.2,.8], [.4,.6]) = [.3, .7].
    kl_1 = 0.9 * math.log(0.9 / 0.8) + 0.1 * math.log(0.1 / 0.2)
    kl_2 = 0.7 * math.log(0.7 / 0.8) + 0.3 * math.log(0.3 / 0.2)
    kl_3 = 0.2 * math.log(0.2 / 0.3) + 0.8 * math.log(0.8 / 0.7)
    kl_4 = 0.4 * math.log(0.4 / 0.3) + 0.6 * math.log(0.6 / 0.7)
    expected = (kl_1 + kl_2 + kl_3 + kl_4) / 4

    torch.testing.assert_close(
        class_centroids(probs, labels, 2), torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    )
    assert conditional_mutual_information(probs, labels, 2) == pytest.approx(expected, abs=1e-6)
    accumulator = CMIAccumulator(2)
    accumulator.update(probs, labels)
    assert accumulator.compute() == pytest.approx(expected, abs=1e-6)


def test_cmi_is_nonnegative_and_zero_when_every_sample_equals_its_centroid():
    labels = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(1))
    assert conditional_mutual_information(random_probs(200, 5, seed=2), labels, 5) > 0.0

    per_class_distribution = random_probs(5, 5, seed=3)
    identical_within_class = per_class_distribution[labels]
    assert conditional_mutual_information(identical_within_class, labels, 5) == pytest.approx(
        0.0, abs=1e-12
    )


def test_streaming_over_uneven_batches_equals_full_batch():
    num_classes, num_samples = 10, 400
    probs = random_probs(num_samples, num_classes, seed=4)
    labels = torch.randint(0, 9, (num_samples,), generator=torch.Generator().manual_seed(5))
    # Class 9 appears only in the last batch; the first batch (one sample) lacks most classes.
    labels[-3:] = 9
    batch_sizes = [1, 57, 200, 3, 139]
    assert sum(batch_sizes) == num_samples

    accumulator = CMIAccumulator(num_classes)
    for batch_probs, batch_labels in zip(
        probs.split(batch_sizes), labels.split(batch_sizes), strict=True
    ):
        accumulator.update(batch_probs, batch_labels)

    full_batch = conditional_mutual_information(probs, labels, num_classes)
    assert accumulator.compute() == pytest.approx(full_batch, abs=1e-6)
    torch.testing.assert_close(
        accumulator.centroids(), class_centroids(probs, labels, num_classes), atol=1e-12, rtol=0
    )


def test_class_with_one_sample_or_none_gives_no_nan():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    labels = torch.tensor([0, 0, 2])  # class 1 absent, class 2 a single sample

    centroids = class_centroids(probs, labels, 3)
    torch.testing.assert_close(centroids[1], torch.full((3,), 1 / 3))
    torch.testing.assert_close(centroids[2], probs[2])
    torch.testing.assert_close(centroids.sum(dim=1), torch.ones(3))

    # A single sample is its own centroid, so only class 0 contributes.
    kl_0 = 0.6 * math.log(0.6 / 0.55) + 0.3 * math.log(0.3 / 0.35) + 0.1 * math.log(0.1 / 0.1)
    kl_1 = 0.5 * math.log(0.5 / 0.55) + 0.4 * math.log(0.4 / 0.35) + 0.1 * math.log(0.1 / 0.1)
    cmi = conditional_mutual_information(probs, labels, 3)
    assert cmi == pytest.approx((kl_0 + kl_1) / 3, abs=1e-6)


def test_one_hot_probabilities_give_finite_cmi():
    probs = torch.eye(3)[[0, 1, 1, 2]]
    labels = torch.tensor([0, 1, 2, 2])
    cmi = conditional_mutual_information(probs, labels, 3)
    accumulator = CMIAccumulator(3)
    accumulator.update(probs, labels)
    assert math.isfinite(cmi)
    assert accumulator.compute() == pytest.approx(cmi, abs=1e-9)


def test_empty_accumulator_refuses_to_compute():
    with pytest.raises(ValueError, match="before any sample"):
        CMIAccumulator(3).compute()


def test_summarize_keys_and_ranges():
    num_classes = 4
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(64, num_classes, generator=generator)
    labels = torch.randint(0, 3, (64,), generator=generator)  # class 3 absent

    summary = summarize(logits, labels, num_classes)

    assert set(summary) == {"acc", "ece", "nll", "cmi", "per_class_acc"}
    assert 0.0 <= summary["acc"] <= 1.0
    assert 0.0 <= summary["ece"] <= 1.0
    assert summary["nll"] > 0.0
    assert summary["cmi"] >= 0.0
    assert all(isinstance(summary[key], float) for key in ("acc", "ece", "nll", "cmi"))
    assert summary["acc"] == pytest.approx(accuracy(logits, labels))
    assert summary["nll"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), abs=1e-6
    )
    per_class = summary["per_class_acc"]
    assert isinstance(per_class, list) and len(per_class) == num_classes
    assert all(0.0 <= value <= 1.0 for value in per_class[:3])
    assert math.isnan(per_class[3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_on_cuda_match_cpu():
    probs = random_probs(100, 6, seed=7)
    labels = torch.randint(0, 6, (100,), generator=torch.Generator().manual_seed(8))
    accumulator = CMIAccumulator(6)
    for batch_probs, batch_labels in zip(probs.split(30), labels.split(30), strict=True):
        accumulator.update(batch_probs.cuda(), batch_labels.cuda())
    expected = conditional_mutual_information(probs, labels, 6)
    assert accumulator.compute() == pytest.approx(expected, abs=1e-9)
    cpu_summary = summarize(probs.log(), labels, 6)
    cuda_summary = summarize(probs.log().cuda(), labels.cuda(), 6)
    for key in ("acc", "ece", "nll", "cmi"):
        assert cuda_summary[key] == pytest.approx(cpu_summary[key], abs=1e-9)
