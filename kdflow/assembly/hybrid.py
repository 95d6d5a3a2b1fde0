"""A meta model with one module swapped in: the model that incubation and m2mKD train.

As in the official Deep Model Assembling and m2mKD code, the first module owns the network's
stem and the last owns its head: swapping in module 0 replaces the meta model's stem too, and
swapping in module K−1 its head, and they train together with the module. The assembled
network is then made of trained parts only, none of them the meta model's.

Only the swapped-in parts train. Everything else is frozen twice over: its parameters do
not require gradients (so the optimiser never sees a gradient for them, and SGD's weight
decay and momentum skip them), and it stays in eval mode whatever `train()` is called with
(so batch norm neither updates its running statistics nor normalises by batch statistics).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from kdflow.assembly.meta import MetaModel
from kdflow.assembly.stitch import StitchedModule
from kdflow.errors import KdflowError
from kdflow.models.base import KDModel


class HybridModel(KDModel):
    """The frozen meta model with stage `index` replaced by a trainable `module`.

    `stem` (module 0 only) and `head` (module K−1 only) replace the meta model's and train
    with the module. The forward pass (stem, stages, head, as for every zoo model) equals
    `suffix(trained(prefix(x)))`.
    """

    def __init__(
        self,
        meta: MetaModel,
        index: int,
        module: nn.Module,
        *,
        stem: nn.Module | None = None,
        head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        num_stages = len(meta.stages)
        if not 0 <= index < num_stages:
            raise KdflowError(f"module index {index} is outside 0..{num_stages - 1}")
        if stem is not None and index != 0:
            raise KdflowError(f"only module 0 owns the stem, not module {index}")
        if head is not None and index != num_stages - 1:
            raise KdflowError(f"only module {num_stages - 1} owns the head, not module {index}")
        frozen = copy.deepcopy(meta)  # the caller's meta model stays untouched
        self.index = index
        self.owns_stem = stem is not None
        self.owns_head = head is not None
        self.stem = stem if stem is not None else frozen.stem
        self.head = head if head is not None else frozen.head
        stages: list[nn.Module] = list(frozen.stages)
        stages[index] = module
        self.stages = nn.ModuleList(stages)
        for part in self.frozen_parts():
            part.requires_grad_(False)
        self.train()

    @property
    def module(self) -> nn.Module:
        """Return the trainable stage module (with its stitches, in an m2mKD pair)."""
        return self.stages[self.index]

    @property
    def stage(self) -> nn.Module:
        """Return the trained stage itself: the module without the stitches of an m2mKD pair."""
        module = self.module
        return module.module if isinstance(module, StitchedModule) else module

    def trained_names(self) -> list[str]:
        """Return the state-dict prefixes of the trained parts, e.g. ["stem.", "stages.0."]."""
        names = ["stem."] if self.owns_stem else []
        names.append(f"stages.{self.index}.")
        return names + (["head."] if self.owns_head else [])

    def trained_parts(self) -> list[nn.Module]:
        """Return the parts that train: the stem (module 0), the module, the head (module K−1)."""
        parts = [self.stem] if self.owns_stem else []
        parts.append(self.module)
        return parts + ([self.head] if self.owns_head else [])

    def frozen_parts(self) -> list[nn.Module]:
        """Return the meta model's parts that never train."""
        parts = [] if self.owns_stem else [self.stem]
        parts += [stage for i, stage in enumerate(self.stages) if i != self.index]
        return parts + ([] if self.owns_head else [self.head])

    def train(self, mode: bool = True) -> HybridModel:
        """Set the trained parts' mode to `mode`; the frozen parts stay in eval mode."""
        super().train(mode)
        for part in self.frozen_parts():
            part.eval()
        return self

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Return the input of the trained parts: the frozen stem and stages before the module.

        For module 0, which owns the stem, that is the network's input itself.
        """
        h = x if self.owns_stem else self.stem(x)
        for stage in self.stages[: self.index]:
            h = stage(h)
        return h

    def trained(self, h: torch.Tensor) -> torch.Tensor:
        """Return the output of the trained parts: [stem →] module [→ head]."""
        if self.owns_stem:
            h = self.stem(h)
        h = self.module(h)
        return self.head(h) if self.owns_head else h

    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        """Return the logits (B×C) from the trained parts' output: the frozen stages and head.

        For module K−1, which owns the head, the trained parts' output already is the logits.
        """
        for stage in self.stages[self.index + 1 :]:
            h = stage(h)
        return h if self.owns_head else self.head(h)


def incubation_model(meta: MetaModel, model: KDModel, index: int) -> HybridModel:
    """Return the incubation hybrid: the frozen meta model with copies of `model`'s module `index`.

    Module 0 brings `model`'s stem and module K−1 its head. The m2mKD teacher path is the
    same hybrid built from the teacher.
    """
    last = len(model.stages) - 1
    return HybridModel(
        meta,
        index,
        copy.deepcopy(model.stages[index]),
        stem=copy.deepcopy(model.stem) if index == 0 else None,
        head=copy.deepcopy(model.head) if index == last else None,
    )
