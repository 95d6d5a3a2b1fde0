import math

import pytest
import torch
import torch.nn.functional as F

from kdflow.losses.mcmi import cmi_term, mcmi_loss_terms


def random_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (8,), generator=generator)
    centroids = torch.randn(4, 4, generator=generator, dtype=torch.float64).softmax(dim=1)
    return logits, labels, centroids


def test_cmi_term_matches_direct_kl():
    logits, labels, centroids = random_batch(seed=0)
    probs = logits.softmax(dim=1)
    expected = (
        sum(
            sum(
                probs[i, k].item() * math.log(probs[i, k].item() / centroids[labels[i], k].item())
                for k in range(4)
            )
            for i in range(8)
        )
        / 8
    )
    assert cmi_term(logits, labels, centroids).item() == pytest.approx(expected, abs=1e-10)


def test_cmi_term_gradient_matches_finite_differences():
    logits, labels, centroids = random_batch(seed=1)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: cmi_term(z, labels, centroids, floor=1e-3), (logits,), eps=1e-6, atol=1e-7
    )


def test_centroids_receive_no_gradient():
    logits, labels, centroids = random_batch(seed=2)
    logits.requires_grad_(True)
    centroids.requires_grad_(True)
    cmi_term(logits, labels, centroids).backward()
    assert centroids.grad is None
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_floor_caps_log_of_one_hot_centroid():
    logits = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0])
    one_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    p0, p1 = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(1.0))
    negative_entropy = p0 * math.log(p0) + p1 * math.log(p1)

    unfloored = cmi_term(logits, labels, one_hot).item()
    floored = cmi_term(logits, labels, one_hot, floor=1e-4).item()

    # Q_0 = [1, 0]: log Q_00 = 0 either way; log Q_01 becomes log(1e-12) or log(1e-4).
    assert unfloored == pytest.approx(negative_entropy - p1 * math.log(1e-12), abs=1e-9)
    assert floored == pytest.approx(negative_entropy - p1 * math.log(1e-4), abs=1e-9)
    assert floored < unfloored
    # A floor below the built-in clamp changes nothing.
    assert cmi_term(logits, labels, one_hot, floor=1e-15).item() == pytest.approx(unfloored)


def test_no_nan_with_missing_class_and_saturated_logits():
    logits = torch.tensor([[200.0, -200.0, 0.0], [-200.0, 200.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0])  # classes 1 and 2 absent from the batch
    centroids = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 1 / 3]])
    terms = mcmi_loss_terms(logits, labels, centroids, lam=0.15, floor=1e-4)
    total = sum(terms.values())
    total.backward()
    assert torch.isfinite(total)
    assert torch.isfinite(logits.grad).all()


def test_mcmi_loss_terms_are_named_and_weighted():
    logits, labels, centroids = random_batch(seed=3)
    terms = mcmi_loss_terms(logits, labels, centroids, lam=0.15, floor=1e-4)
    assert set(terms) == {"ce", "cmi"}
    torch.testing.assert_close(terms["ce"], F.cross_entropy(logits, labels))
    torch.testing.assert_close(terms["cmi"], -0.15 * cmi_term(logits, labels, centroids, 1e-4))


def test_half_precision_logits_stay_finite():
    logits, labels, centroids = random_batch(seed=4)
    value = cmi_term(logits.half(), labels, torch.eye(4).half())
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(
        cmi_term(logits.float(), labels, torch.eye(4)).item(), rel=1e-2
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cmi_term_on_cuda_matches_cpu_with_cpu_centroids():
    logits, labels, centroids = random_batch(seed=5)
    cuda_logits = logits.float().cuda().requires_grad_(True)
    # Centroids computed on the CPU must still work against GPU logits.
    value = cmi_term(cuda_logits, labels.cuda(), centroids, floor=1e-4)
    value.backward()
    assert value.item() == pytest.approx(cmi_term(logits, labels, centroids, 1e-4).item(), abs=1e-5)
    assert torch.isfinite(cuda_logits.grad).all()
