"""Incubation: only module i changes; the frozen meta stays bit-identical."""

from __future__ import annotations

import copy

import pytest
import torch

from kdflow.assembly import HybridModel, incubation_model
from kdflow.config import OptimParams
from kdflow.data.tensors import Split
from kdflow.errors import KdflowError
from kdflow.train.teacher import cross_entropy_objective
from kdflow.train.trainer import FitConfig, fit
from tests.assembly.conftest import NUM_CLASSES, seeded, trained_looking_meta


def _blobs(input_shape: tuple[int, ...], n: int, seed: int) -> Split:
    """Return n samples of NUM_CLASSES noisy class prototypes."""
    prototypes = torch.randn(NUM_CLASSES, *input_shape, generator=torch.Generator().manual_seed(3))
    y = torch.arange(n) % NUM_CLASSES
    x = prototypes[y] + torch.randn(n, *input_shape, generator=torch.Generator().manual_seed(seed))
    return Split(x, y, torch.arange(n))


def _one_epoch(model: HybridModel, input_shape: tuple[int, ...]) -> None:
    """Train `model` for one epoch of four SGD steps with momentum and weight decay."""
    optim = OptimParams(epochs=1, batch_size=16, lr=0.1, momentum=0.9, weight_decay=0.01)
    cfg = FitConfig(optim=optim, seed=0, device=torch.device("cpu"))
    fit(
        model,
        cross_entropy_objective,
        _blobs(input_shape, 64, seed=1),
        _blobs(input_shape, 16, seed=2),
        cfg,
        num_classes=NUM_CLASSES,
    )


@pytest.mark.parametrize(
    ("name", "input_shape", "index"),
    [
        ("resnet14", (1, 16), 0),
        ("resnet14", (1, 16), 1),
        ("resnet14", (1, 16), 2),
        ("wrn_16_1", (2, 8, 8), 0),
        ("wrn_16_1", (2, 8, 8), 2),
    ],
)
def test_training_changes_module_i_and_the_stem_or_head_it_owns_only(name, input_shape, index):
    meta = trained_looking_meta(name, input_shape)
    hybrid = incubation_model(meta, seeded(name, input_shape, seed=1), index)
    before = copy.deepcopy(hybrid.state_dict())

    _one_epoch(hybrid, input_shape)

    after = hybrid.state_dict()
    # Module 0 owns the stem and module K−1 the head (the official code's split).
    owned = ["stem."] * (index == 0) + [f"stages.{index}."] + ["head."] * (index == 2)
    assert hybrid.trained_names() == owned
    trained = tuple(owned)
    frozen = [k for k in before if not k.startswith(trained)]
    assert any("running_mean" in k for k in frozen)  # batch-norm buffers are among them
    changed = [k for k in frozen if not torch.equal(before[k], after[k])]
    assert changed == []
    weights = [k for k in before if k.startswith(trained) and k.endswith("weight")]
    assert all(not torch.equal(before[k], after[k]) for k in weights)
    for part in ("stem.", "head."):
        moved = any(not torch.equal(before[k], after[k]) for k in before if k.startswith(part))
        assert moved == (part in owned), part
    # The hybrid's frozen parts are copies: the meta model it came from is untouched too.
    for key, value in meta.state_dict().items():
        if not key.startswith(trained):
            assert torch.equal(value, after[key]), key


def test_module_0_and_k_1_bring_the_model_s_own_stem_and_head():
    meta = trained_looking_meta("resnet14", (1, 16))
    target = seeded("resnet14", (1, 16), seed=1)

    first, middle, last = (incubation_model(meta, target, i) for i in range(3))

    assert (first.owns_stem, first.owns_head) == (True, False)
    assert (middle.owns_stem, middle.owns_head) == (False, False)
    assert (last.owns_stem, last.owns_head) == (False, True)
    for part, hybrid, source in (("stem", first, target), ("head", last, target)):
        for key, value in getattr(source, part).state_dict().items():
            assert torch.equal(getattr(hybrid, part).state_dict()[key], value), (part, key)
        assert getattr(hybrid, part) is not getattr(source, part)  # a copy
    for part in ("stem", "head"):
        for key, value in getattr(meta, part).state_dict().items():
            assert torch.equal(getattr(middle, part).state_dict()[key], value), (part, key)


def test_only_module_0_may_own_the_stem_and_only_module_k_1_the_head():
    meta = trained_looking_meta("resnet14", (1, 16))
    target = seeded("resnet14", (1, 16))

    with pytest.raises(KdflowError, match="only module 0 owns the stem, not module 1"):
        HybridModel(meta, 1, target.stages[1], stem=target.stem)
    with pytest.raises(KdflowError, match="only module 2 owns the head, not module 0"):
        HybridModel(meta, 0, target.stages[0], head=target.head)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_train_mode_reaches_the_trained_parts_only(index):
    hybrid = incubation_model(
        trained_looking_meta("resnet14", (1, 16)), seeded("resnet14", (1, 16)), index
    )

    hybrid.train()

    assert hybrid.training
    assert len(hybrid.trained_parts()) == 1 + (index in (0, 2))
    for part in hybrid.frozen_parts():
        assert not any(m.training for m in part.modules())
        assert not any(p.requires_grad for p in part.parameters())
    for part in hybrid.trained_parts():
        assert all(m.training for m in part.modules())
        assert all(p.requires_grad for p in part.parameters())
    hybrid.eval()
    assert not any(m.training for m in hybrid.modules())


@pytest.mark.parametrize("index", [0, 1, 2])
def test_prefix_trained_suffix_is_the_forward(index):
    hybrid = incubation_model(
        trained_looking_meta("resnet14", (1, 16)), seeded("resnet14", (1, 16)), index
    ).eval()
    x = torch.randn(4, 1, 16)

    with torch.no_grad():
        assert torch.equal(hybrid.suffix(hybrid.trained(hybrid.prefix(x))), hybrid(x))
    if index == 0:
        assert torch.equal(hybrid.prefix(x), x)  # module 0 starts from the input
