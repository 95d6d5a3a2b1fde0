"""A meta model with one module swapped in: the model that incubation (§7.2) and m2mKD (§8) train.

Only the swapped-in module trains. Everything else is frozen twice over: its parameters do
not require gradients (so the optimiser never sees a gradient for them, and SGD's weight
decay and momentum skip them), and it stays in eval mode whatever `train()` is called with
(so batch norm neither updates its running statistics nor normalises by batch statistics).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from kdflow.assembly.meta import MetaModel
from kdflow.errors import KdflowError
from kdflow.models.base import KDModel


class HybridModel(KDModel):
    """The frozen meta model with stage `index` replaced by a trainable `module`."""

    def __init__(self, meta: MetaModel, index: int, module: nn.Module) -> None:
        super().__init__()
        num_stages = len(meta.stages)
        if not 0 <= index < num_stages:
            raise KdflowError(f"module index {index} is outside 0..{num_stages - 1}")
        frozen = copy.deepcopy(meta)  # the caller's meta model stays untouched
        self.index = index
        self.stem = frozen.stem
        self.head = frozen.head
        stages: list[nn.Module] = list(frozen.stages)
        stages[index] = module
        self.stages = nn.ModuleList(stages)
        for part in self.frozen_parts():
            part.requires_grad_(False)
        self.train()

    @property
    def module(self) -> nn.Module:
        """Return the trainable module."""
        return self.stages[self.index]

    def frozen_parts(self) -> list[nn.Module]:
        """Return the meta model's parts that never train: stem, the other stages, head."""
        others = [stage for i, stage in enumerate(self.stages) if i != self.index]
        return [self.stem, *others, self.head]

    def train(self, mode: bool = True) -> HybridModel:
        """Set the module's mode to `mode`; the frozen parts stay in eval mode."""
        super().train(mode)
        for part in self.frozen_parts():
            part.eval()
        return self

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Return the input of the module: stem and the stages before it."""
        h = self.stem(x)
        for stage in self.stages[: self.index]:
            h = stage(h)
        return h

    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        """Return the logits (B×C) from the module's output: the later stages, then the head."""
        for stage in self.stages[self.index + 1 :]:
            h = stage(h)
        return self.head(h)


def incubation_model(meta: MetaModel, target: KDModel, index: int) -> HybridModel:
    """Return the hybrid of §7.2: the frozen meta model with target module `index` (a copy)."""
    return HybridModel(meta, index, copy.deepcopy(target.stages[index]))
