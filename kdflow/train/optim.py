"""Momentum SGD and its learning-rate schedules, without importing torch's compiler stack.

Every `torch.optim` optimiser imports `torch._dynamo` the first time it is built or stepped
(measured here: 1.3 s per process, more than the training of a default student takes to
converge by a third). A default pipeline runs dozens of short stage processes, so kdflow keeps
the one optimiser it needs here. The update is torch.optim.SGD's with dampening 0 and no
Nesterov, and tests check it bit for bit against `torch.optim.SGD(foreach=False)` and, fused,
against `torch.optim.SGD(fused=True)`.
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
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        momentum: float,
        weight_decay: float,
        fused: bool = False,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        # One kernel for the whole update (torch.optim.SGD(fused=True)'s); for GPUs, where
        # the per-op launch cost of even the multi-tensor path shows at batch 64.
        self.fused = fused
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        """Apply one update to every parameter that received a gradient."""
        # Multi-tensor (foreach) ops: a handful of kernel launches per step instead of several
        # per parameter, which on a GPU at batch 64 is a large share of the step. The
        # arithmetic is the per-parameter one, element for element.
        present = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not present:
            return
        params = [self.params[i] for i in present]
        grads = [p.grad for p in params]
        missing = [self.buffers[i] is None for i in present]
        if self.fused and (all(missing) or not any(missing)):
            self._fused_step(present, params, grads, first=all(missing))
            return
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            moving = [k for k, gone in enumerate(missing) if not gone]
            if moving:
                buffers = [self.buffers[present[k]] for k in moving]
                torch._foreach_mul_(buffers, self.momentum)
                torch._foreach_add_(buffers, [grads[k] for k in moving])
            for k, gone in enumerate(missing):
                if gone:
                    self.buffers[present[k]] = torch.clone(grads[k]).detach()
            grads = [self.buffers[i] for i in present]
        torch._foreach_add_(params, grads, alpha=-self.lr)

    def _fused_step(
        self,
        present: list[int],
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        first: bool,
    ) -> None:
        if self.momentum and first:  # the kernel fills fresh buffers with the gradient
            for i, grad in zip(present, grads, strict=True):
                self.buffers[i] = torch.empty_like(grad)
        torch._fused_sgd_(
            params,
            grads,
            [self.buffers[i] for i in present] if self.momentum else [],
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            lr=self.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
            is_first_step=bool(self.momentum) and first,
        )

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
