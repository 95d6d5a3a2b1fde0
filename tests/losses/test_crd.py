"""crd against a direct NCE computation, its class-aware negatives, banks and seeded sampling."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from kdflow.errors import KdflowError
from kdflow.losses import build_method
from kdflow.losses.crd import CRD
from tests.losses.conftest import NUM_TRAIN, TRAIN_LABELS

# Every anchor can draw from the rows outside its class; the largest class leaves the fewest.
OTHER_CLASS_POOL = NUM_TRAIN - int(torch.bincount(TRAIN_LABELS).max())


def build_crd(layout, train_labels: torch.Tensor = TRAIN_LABELS, **overrides: float) -> CRD:
    """Return a float64 crd method for the layout."""
    student, teacher = layout
    method = build_method(
        "crd", student, teacher, len(train_labels), train_labels=train_labels, **overrides
    )
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


def test_crd_negatives_are_distinct_rows_of_other_classes(layout, batch_factory) -> None:
    method = build_crd(layout, nce_k=20)
    rows = record_rows(method)
    for seed in range(5):
        batch = batch_factory(*layout, seed=seed)
        method(batch)
        drawn = rows[-1]
        assert drawn.shape == (len(batch.indices), 1 + 20)
        assert torch.equal(drawn[:, 0], batch.indices)  # RepDistiller's `exact` positive
        negatives = drawn[:, 1:]
        assert negatives.min() >= 0 and negatives.max() < NUM_TRAIN
        # Never the anchor's class (so never the anchor itself), and never a row twice.
        assert (TRAIN_LABELS[negatives] != batch.labels.unsqueeze(1)).all()
        assert all(len(set(row.tolist())) == 20 for row in negatives)


def test_crd_negatives_are_uniform_over_the_other_classes(layout) -> None:
    method = build_crd(layout, nce_k=5)
    anchor = torch.tensor([0])
    counts = torch.zeros(NUM_TRAIN)
    draws = 2000
    for _ in range(draws):
        counts += torch.bincount(method.sample_contrast_indices(anchor)[0, 1:], minlength=NUM_TRAIN)
    eligible = TRAIN_LABELS[0] != TRAIN_LABELS
    assert counts[~eligible].sum() == 0
    expected = draws * 5 / int(eligible.sum())  # each eligible row: K / pool per draw
    assert ((counts[eligible] - expected).abs() < 0.3 * expected).all()


def test_crd_default_k_is_16384_capped_by_the_other_class_pool(layout, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="kdflow.losses.crd"):
        method = build_crd(layout)
    assert method.hparams["nce_k"] == 16384
    assert method.num_negatives == OTHER_CLASS_POOL  # 50 − 8
    message = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for number in ("16384", str(OTHER_CLASS_POOL), str(NUM_TRAIN)):
        assert number in message


def test_crd_keeps_k_below_the_cap_without_a_warning(layout, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="kdflow.losses.crd"):
        method = build_crd(layout, nce_k=OTHER_CLASS_POOL)
    assert method.num_negatives == OTHER_CLASS_POOL
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


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


def test_crd_needs_the_training_labels(layout) -> None:
    with pytest.raises(KdflowError, match="crd needs the training labels"):
        build_method("crd", *layout, NUM_TRAIN)
    with pytest.raises(KdflowError, match=r"expected \(50,\)"):
        build_method("crd", *layout, NUM_TRAIN, train_labels=TRAIN_LABELS[:10])


def test_crd_refuses_a_training_set_of_one_class(layout) -> None:
    with pytest.raises(KdflowError, match="single class"):
        build_crd(layout, train_labels=torch.zeros(NUM_TRAIN, dtype=torch.long))


def test_crd_labels_move_with_the_module_but_are_not_saved(layout) -> None:
    method = build_crd(layout)
    assert torch.equal(method.train_labels, TRAIN_LABELS)
    assert "train_labels" not in method.state_dict()
