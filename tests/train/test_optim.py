"""MomentumSGD against torch.optim.SGD: the same update, bit for bit, and a faithful state."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kdflow.train.optim import MomentumSGD


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _train(
    model: nn.Module, optimizer, steps: int, lrs: list[float] | None = None, seed: int = 1
) -> None:
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        if lrs is not None:
            if isinstance(optimizer, MomentumSGD):
                optimizer.lr = lrs[step]
            else:
                optimizer.param_groups[0]["lr"] = lrs[step]
        x = torch.randn(16, 6, generator=generator)
        y = torch.randint(0, 3, (16,), generator=generator)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("fused", [False, True], ids=["multi-tensor", "fused"])
@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.9, 5e-4), (0.0, 0.0), (0.5, 0.0)])
def test_update_is_torch_sgd_bit_for_bit(momentum: float, weight_decay: float, fused: bool):
    ours, reference = _model(), _model()
    lrs = [0.1, 0.1, 0.05, 0.05, 0.01, 0.2, 0.1, 0.1]

    _train(ours, MomentumSGD(ours.parameters(), 0.1, momentum, weight_decay, fused=fused), 8, lrs)
    # The fused kernel against torch's own use of it; the multi-tensor path against the
    # plain per-parameter loop.
    kernel = {"fused": True} if fused else {"foreach": False}
    torch_sgd = torch.optim.SGD(
        reference.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay, **kernel
    )
    _train(reference, torch_sgd, 8, lrs)

    for (name, a), b in zip(
        ours.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_frozen_parameters_are_left_out():
    model = _model()
    model[0].weight.requires_grad_(False)
    before = model[0].weight.clone()

    _train(model, MomentumSGD(model.parameters(), 0.1, 0.9, 5e-4), 3)

    assert torch.equal(model[0].weight, before)


def test_state_round_trip_continues_identically():
    straight = _model()
    optimizer = MomentumSGD(straight.parameters(), 0.1, 0.9, 5e-4)
    _train(straight, optimizer, 3, seed=1)
    _train(straight, optimizer, 3, seed=2)

    resumed = _model()
    first = MomentumSGD(resumed.parameters(), 0.1, 0.9, 5e-4)
    _train(resumed, first, 3, seed=1)
    state = copy.deepcopy(first.state_dict())
    second = MomentumSGD(resumed.parameters(), 0.5, 0.9, 5e-4)  # a fresh process's optimiser
    second.load_state_dict(state)
    _train(resumed, second, 3, seed=2)

    assert second.lr == 0.1
    assert all(isinstance(v, torch.Tensor | float | list) for v in state.values())
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.equal(a, b)
