"""Incubation (ALGORITHMS §7.2): only module i changes; the frozen meta stays bit-identical."""

from __future__ import annotations

import copy

import pytest
import torch

from kdflow.assembly import HybridModel, incubation_model
from kdflow.config import OptimParams
from kdflow.data.tensors import Split
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
    [("resnet14", (1, 16), 0), ("resnet14", (1, 16), 1), ("wrn_16_1", (2, 8, 8), 2)],
)
def test_training_changes_module_i_only(name, input_shape, index):
    meta = trained_looking_meta(name, input_shape)
    hybrid = incubation_model(meta, seeded(name, input_shape, seed=1), index)
    before = copy.deepcopy(hybrid.state_dict())

    _one_epoch(hybrid, input_shape)

    after = hybrid.state_dict()
    module = f"stages.{index}."
    frozen = [k for k in before if not k.startswith(module)]
    assert any("running_mean" in k for k in frozen)  # batch-norm buffers are among them
    changed = [k for k in frozen if not torch.equal(before[k], after[k])]
    assert changed == []
    trained = [k for k in before if k.startswith(module) and k.endswith("weight")]
    assert all(not torch.equal(before[k], after[k]) for k in trained)
    # The hybrid's frozen parts are copies: the meta model it came from is untouched too.
    for key, value in meta.state_dict().items():
        if not key.startswith(module):
            assert torch.equal(value, after[key]), key


def test_train_mode_reaches_the_module_only():
    hybrid = incubation_model(
        trained_looking_meta("resnet14", (1, 16)), seeded("resnet14", (1, 16)), 1
    )

    hybrid.train()

    assert hybrid.training and hybrid.module.training
    for part in hybrid.frozen_parts():
        assert not any(m.training for m in part.modules())
        assert not any(p.requires_grad for p in part.parameters())
    assert all(p.requires_grad for p in hybrid.module.parameters())
    hybrid.eval()
    assert not any(m.training for m in hybrid.modules())


def test_prefix_module_suffix_is_the_forward():
    hybrid = incubation_model(
        trained_looking_meta("resnet14", (1, 16)), seeded("resnet14", (1, 16)), 1
    ).eval()
    x = torch.randn(4, 1, 16)

    with torch.no_grad():
        assert torch.equal(hybrid.suffix(hybrid.module(hybrid.prefix(x))), hybrid(x))
