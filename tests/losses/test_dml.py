"""dml against explicit pairwise KL terms, and its gradient flow between peers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdflow.losses import build_method


def kl(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Batch-mean KL(softmax(target) ‖ softmax(logits)) with torch's kl_div."""
    return F.kl_div(logits.log_softmax(1), target_logits.softmax(1), reduction="batchmean")


def test_dml_matches_reference(layout, batch_factory) -> None:
    student, _ = layout
    batch = batch_factory(student, None, num_students=2)
    z0, z1 = (peer.logits for peer in batch.students)
    terms = build_method("dml", student, None, 50)(batch)
    ce = F.cross_entropy(z0, batch.labels) + F.cross_entropy(z1, batch.labels)
    assert terms.keys() == {"ce", "dml"}
    torch.testing.assert_close(terms["ce"], ce)
    torch.testing.assert_close(terms["dml"], kl(z1, z0) + kl(z0, z1))


def test_dml_averages_over_the_other_peers(layout, batch_factory) -> None:
    student, _ = layout
    batch = batch_factory(student, None, num_students=3)
    z = [peer.logits for peer in batch.students]
    expected = sum(
        sum(kl(z[other], z[k]) for other in range(3) if other != k) / 2 for k in range(3)
    )
    torch.testing.assert_close(build_method("dml", student, None, 50)(batch)["dml"], expected)


def test_dml_gives_each_peer_only_its_own_pull(layout, batch_factory) -> None:
    student, _ = layout
    batch = batch_factory(student, None, num_students=2)
    z0, z1 = (peer.logits for peer in batch.students)
    build_method("dml", student, None, 50)(batch)["dml"].backward()
    (expected_z0,) = torch.autograd.grad(kl(z1.detach(), z0), z0)
    (expected_z1,) = torch.autograd.grad(kl(z0.detach(), z1), z1)
    assert z0.grad.abs().sum() > 0 and z1.grad.abs().sum() > 0
    torch.testing.assert_close(z0.grad, expected_z0)
    torch.testing.assert_close(z1.grad, expected_z1)
