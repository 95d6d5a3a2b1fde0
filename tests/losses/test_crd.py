"""crd against a direct NCE computation, and its memory banks and seeded sampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdflow.errors import KdflowError
from kdflow.losses import build_method
from kdflow.losses.crd import CRD

NUM_TRAIN = 50  # matches the index range of conftest's batches


def build_crd(layout, **overrides: float) -> CRD:
    """Return a float64 crd method for the layout."""
    student, teacher = layout
    method = build_method("crd", student, teacher, NUM_TRAIN, **overrides)
    assert isinstance(method, CRD)
    return method.double()


def record_rows(method: CRD) -> list[torch.Tensor]:
    """Make `method` record every B×(1+K) row index it samples; return the record."""
    recorded: list[torch.Tensor] = []
    sample = method.sample_contrast_indices

    def recording(indices: torch.Tensor) -> torch.Tensor:
        rows = sample(indices)
        recorded.append(rows)
        return rows

    method.sample_contrast_indices = recording  # type: ignore[method-assign]
    return recorded


def reference_nce(embedding: torch.Tensor, bank: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """RepDistiller's ContrastMemory scores with Z from this batch, then ContrastLoss."""
    batch_size, width = rows.shape
    scores = torch.zeros(batch_size, width, dtype=embedding.dtype)
    for i in range(batch_size):
        for j in range(width):
            scores[i, j] = torch.exp(bank[rows[i, j]].dot(embedding[i]) / 0.07)
    scores = scores / (scores.mean() * NUM_TRAIN)
    noise = (width - 1) / NUM_TRAIN
    positive = torch.log(scores[:, 0] / (scores[:, 0] + noise + 1e-7)).sum()
    negative = torch.log(noise / (scores[:, 1:] + noise + 1e-7)).sum()
    return -(positive + negative) / batch_size


def embed(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """x·Wᵀ + b, divided by its row norm."""
    y = x @ linear.weight.T + linear.bias
    return y / y.norm(dim=1, keepdim=True)


def test_crd_matches_reference(layout, batch_factory) -> None:
    method = build_crd(layout, beta=1.0, nce_k=20)
    rows = record_rows(method)
    memory_student = method.memory_student.clone()
    memory_teacher = method.memory_teacher.clone()
    batch = batch_factory(*layout)
    loss = method(batch)["crd"]
    v_s = embed(method.embed_student.linear, batch.students[0].embedding)
    v_t = embed(method.embed_teacher.linear, batch.teacher.embedding)
    expected = reference_nce(v_s, memory_teacher, rows[0]) + reference_nce(
        v_t, memory_student, rows[0]
    )
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_crd_fixes_its_normalising_constants_on_the_first_batch(layout, batch_factory) -> None:
    # test_crd_matches_reference checks the value Z takes on a first batch; this checks that
    # a second, different batch leaves it alone.
    method = build_crd(layout, beta=1.0, nce_k=20)
    assert method.z_student.item() < 0 and method.z_teacher.item() < 0  # not set yet
    method(batch_factory(*layout, seed=0))
    z_student, z_teacher = method.z_student.clone(), method.z_teacher.clone()

    method(batch_factory(*layout, seed=1))

    assert z_student.item() > 0 and z_teacher.item() > 0
    assert torch.equal(method.z_student, z_student)
    assert torch.equal(method.z_teacher, z_teacher)


def test_crd_draws_k_negatives_that_are_never_the_positive(layout, batch_factory) -> None:
    method = build_crd(layout)
    assert method.num_negatives == NUM_TRAIN - 1  # min(4096, N − 1)
    rows = record_rows(method)
    batch = batch_factory(*layout)
    method(batch)
    assert rows[0].shape == (len(batch.labels), NUM_TRAIN)
    assert torch.equal(rows[0][:, 0], batch.indices)
    assert (rows[0][:, 1:] != batch.indices.unsqueeze(1)).all()
    assert rows[0].min() >= 0 and rows[0].max() < NUM_TRAIN


def test_crd_updates_memory_rows_of_the_batch_in_training_only(layout, batch_factory) -> None:
    method = build_crd(layout)
    batch = batch_factory(*layout)
    before = method.memory_student.clone(), method.memory_teacher.clone()
    method.eval()
    method(batch)
    assert torch.equal(method.memory_student, before[0])
    method.train()
    method(batch)
    v_s = embed(method.embed_student.linear, batch.students[0].embedding).detach()
    v_t = embed(method.embed_teacher.linear, batch.teacher.embedding).detach()
    untouched = torch.ones(NUM_TRAIN, dtype=torch.bool)
    untouched[batch.indices] = False
    for bank, old, new in zip(
        (method.memory_student, method.memory_teacher), before, (v_s, v_t), strict=True
    ):
        expected = F.normalize(0.5 * old[batch.indices] + 0.5 * new, dim=1)
        torch.testing.assert_close(bank[batch.indices], expected)
        assert torch.equal(bank[untouched], old[untouched])


def test_crd_is_reproducible_with_the_same_seed(layout, batch_factory) -> None:
    def run(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        torch.manual_seed(123)  # the embedding heads' initialisation, shared by all runs
        method = build_crd(layout, seed=seed)
        rows = record_rows(method)
        losses = [method(batch_factory(*layout, seed=step))["crd"] for step in range(3)]
        return rows, losses

    (rows_a, losses_a), (rows_b, losses_b), (rows_c, _) = run(0), run(0), run(1)
    for step in range(3):
        assert torch.equal(rows_a[step], rows_b[step])
        assert torch.equal(losses_a[step], losses_b[step])
    assert not torch.equal(rows_a[0], rows_c[0])


def test_crd_state_dict_restores_banks_and_sampler(layout, batch_factory) -> None:
    torch.manual_seed(0)
    original = build_crd(layout)
    original(batch_factory(*layout))
    restored = build_crd(layout, seed=5)
    restored.load_state_dict(original.state_dict())
    assert torch.equal(restored.memory_student, original.memory_student)
    indices = torch.arange(4)
    assert torch.equal(
        restored.sample_contrast_indices(indices), original.sample_contrast_indices(indices)
    )


def test_crd_needs_indices(layout, batch_factory) -> None:
    batch = batch_factory(*layout)
    batch.indices = None
    with pytest.raises(KdflowError, match="indices"):
        build_crd(layout)(batch)


def test_crd_needs_two_training_samples(layout) -> None:
    with pytest.raises(KdflowError, match="at least 2"):
        build_method("crd", *layout, 1)
