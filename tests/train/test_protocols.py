"""Student protocols (docs/algorithms.md): few-shot subsets, omitted classes, subset checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdflow.errors import KdflowError
from kdflow.train.protocols import (
    check_subset,
    fewshot_indices,
    protocol_indices,
    zeroshot_indices,
)

# Unequal class sizes, shuffled, so rounding and per-class stratification both matter.
CLASS_SIZES = (45, 30, 7, 3, 100, 12)
NUM_CLASSES = len(CLASS_SIZES)


def make_labels(seed: int = 0) -> np.ndarray:
    """Return shuffled labels with CLASS_SIZES samples of each class."""
    labels = np.repeat(np.arange(NUM_CLASSES), CLASS_SIZES)
    return np.random.default_rng(seed).permutation(labels)


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5, 0.75, 1.0])
def test_fewshot_takes_the_same_fraction_of_every_class(fraction):
    labels = make_labels()

    index = fewshot_indices(labels, fraction, seed=0)

    assert np.all(np.diff(index) > 0)  # sorted, no position twice
    counts = np.bincount(labels[index], minlength=NUM_CLASSES)
    for cls, size in enumerate(CLASS_SIZES):
        assert counts[cls] >= 1, cls
        assert counts[cls] == max(1, round(fraction * size)), cls
        assert abs(counts[cls] - fraction * size) <= 1 or counts[cls] == 1, cls  # within one


def test_fewshot_is_deterministic_for_a_seed_and_differs_for_another():
    labels = make_labels()

    first = fewshot_indices(labels, 0.25, seed=3)
    np.random.seed(123)  # the global RNGs must play no part
    torch.manual_seed(123)
    again = fewshot_indices(labels.copy(), 0.25, seed=3)
    other = fewshot_indices(labels, 0.25, seed=4)

    np.testing.assert_array_equal(first, again)
    assert len(other) == len(first)
    assert not np.array_equal(first, other)


def test_fewshot_depends_only_on_labels_fraction_and_seed():
    labels = make_labels()
    reference = fewshot_indices(labels, 0.1, seed=0)

    # Same labels in another container and dtype, reached through protocol_indices.
    via_protocol = protocol_indices(
        "fewshot", torch.from_numpy(labels), fraction=0.1, omit=[1, 2], seed=0
    )

    np.testing.assert_array_equal(via_protocol.numpy(), reference)
    np.testing.assert_array_equal(fewshot_indices(labels.astype(np.int32), 0.1, 0), reference)


def test_zeroshot_removes_exactly_the_omitted_classes():
    labels = make_labels()

    index = zeroshot_indices(labels, [2, 4])

    np.testing.assert_array_equal(index, np.flatnonzero((labels != 2) & (labels != 4)))
    assert set(labels[index].tolist()) == {0, 1, 3, 5}


def test_protocol_full_keeps_every_sample():
    labels = torch.from_numpy(make_labels())

    index = protocol_indices("full", labels, fraction=0.1, omit=[0], seed=0)

    torch.testing.assert_close(index, torch.arange(len(labels)))


def test_unknown_protocol_is_a_kdflow_error():
    with pytest.raises(KdflowError, match="unknown protocol 'bogus'; known: full, fewshot"):
        protocol_indices("bogus", torch.zeros(4, dtype=torch.long), fraction=0.1, omit=[], seed=0)


def _check(protocol: str, subset: np.ndarray, full: np.ndarray, **kw: object) -> list[str]:
    settings = {"fraction": 0.1, "omit": [2]} | kw
    return check_subset(
        protocol,
        torch.from_numpy(subset),
        torch.from_numpy(full),
        NUM_CLASSES,
        **settings,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("protocol", ["full", "fewshot", "zeroshot"])
def test_check_subset_accepts_the_subsets_protocol_indices_returns(protocol):
    labels = make_labels()
    index = protocol_indices(protocol, torch.from_numpy(labels), fraction=0.1, omit=[2], seed=5)

    checks = _check(protocol, labels[index.numpy()], labels)

    assert "class 0 present" in checks
    assert ("class 2 absent" in checks) == (protocol == "zeroshot")
    assert ("class 2 present" in checks) == (protocol != "zeroshot")


def test_check_subset_rejects_a_fewshot_subset_of_the_wrong_fraction():
    labels = make_labels()
    index = fewshot_indices(labels, 0.25, seed=0)  # class 4: 25 of 100, expected 10 ± 1

    with pytest.raises(KdflowError, match=r"fewshot subset has \d+ sample\(s\) of class 0;"):
        _check("fewshot", labels[index], labels, fraction=0.1)


def test_check_subset_names_the_one_class_of_the_wrong_size():
    labels = make_labels()
    index = fewshot_indices(labels, 0.1, seed=0)
    extra = np.setdiff1d(np.flatnonzero(labels == 4), index)[:3]  # 10 of class 4 become 13

    with pytest.raises(KdflowError, match=r"has 13 sample\(s\) of class 4; expected 10\.0 ± 1"):
        _check("fewshot", labels[np.concatenate([index, extra])], labels, fraction=0.1)


def test_check_subset_rejects_an_omitted_class_that_is_present():
    labels = make_labels()
    index = zeroshot_indices(labels, [2])
    leaked = np.concatenate([index, np.flatnonzero(labels == 2)[:1]])

    with pytest.raises(KdflowError, match="holds 1 sample\\(s\\) of omitted class 2"):
        _check("zeroshot", labels[leaked], labels, omit=[2])


@pytest.mark.parametrize("protocol", ["full", "zeroshot", "fewshot"])
def test_check_subset_rejects_a_missing_class(protocol):
    labels = make_labels()
    index = protocol_indices(protocol, torch.from_numpy(labels), fraction=0.1, omit=[2], seed=0)
    subset = labels[index.numpy()]
    # Class 3 has 3 samples, so few-shot keeps one (0.3 rounds to 0, at least 1): a missing
    # class 3 is within one sample of the fraction and only the presence check catches it.
    assert (subset == 3).sum() >= 1

    with pytest.raises(KdflowError, match=f"^{protocol} subset has no sample of class 3$"):
        _check(protocol, subset[subset != 3], labels, omit=[2])
