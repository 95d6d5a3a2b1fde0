"""Momentum SGD and its learning-rate schedules, without importing torch's compiler stack.

Every `torch.optim` optimiser imports `torch._dynamo` the first time it is built or stepped
(measured here: 1.3 s per process, more than the training of a default student takes to
converge by a third). A default pipeline runs dozens of short stage processes, so kdflow keeps
the one optimiser it needs here. The update is torch.optim.SGD's with dampening 0 and no
Nesterov, and a test checks it bit for bit against `torch.optim.SGD(foreach=False)`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from kdflow.config import OptimParams


class MomentumSGD:
    """SGD with heavy-ball momentum and L2 weight decay (torch.optim.SGD's update)."""

    def __init__(
        self, params: Iterable[torch.nn.Parameter], lr: float, momentum: float, weight_decay: float
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        """Apply one update to every parameter that received a gradient."""
        for i, param in enumerate(self.params):
            if param.grad is None:
                continue
            grad = param.grad
            if self.weight_decay:
                grad = grad.add(param, alpha=self.weight_decay)
            if self.momentum:
                buffer = self.buffers[i]
                if buffer is None:
                    buffer = self.buffers[i] = torch.clone(grad).detach()
                else:
                    buffer.mul_(self.momentum).add_(grad)
                grad = buffer
            param.add_(grad, alpha=-self.lr)

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (set to None, as torch.optim does by default)."""
        for param in self.params:
            param.grad = None

    def state_dict(self) -> dict[str, Any]:
        """Return the learning rate and momentum buffers (tensors and floats only)."""
        present = [i for i, b in enumerate(self.buffers) if b is not None]
        return {
            "lr": self.lr,
            "buffer_index": torch.tensor(present, dtype=torch.long),
            "buffers": [self.buffers[i] for i in present],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.lr = float(state["lr"])
        self.buffers = [None] * len(self.params)
        for i, buffer in zip(state["buffer_index"].tolist(), state["buffers"], strict=True):
            self.buffers[i] = buffer.to(self.params[i].device)


def learning_rate(optim: OptimParams, epoch: int) -> float:
    """Return the learning rate of 0-based `epoch` under the schedule in `optim`."""
    if optim.schedule == "cosine":
        return optim.lr * (1 + math.cos(math.pi * epoch / optim.epochs)) / 2
    if optim.schedule == "multistep":
        return optim.lr * optim.lr_decay ** sum(epoch >= m for m in optim.milestones)
    return optim.lr
