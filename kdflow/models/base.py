"""The interface every model in the zoo implements (see DESIGN.md, models/)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModelOutput:
    """What a model returns when asked for more than logits."""

    logits: torch.Tensor  # B×C
    features: list[torch.Tensor]  # output of each of the K stage modules, in order
    embedding: torch.Tensor  # B×D penultimate embedding (input of the final linear layer)


class KDModel(nn.Module):
    """A classifier made of a stem, K stage modules and a head.

    `forward(x)` returns logits; `forward_features(x)` returns a ModelOutput.
    `head(stages[-1](...stages[0](stem(x))))` equals `forward(x)` exactly.
    """

    stem: nn.Module
    stages: nn.ModuleList
    head: nn.Module  # pools and flattens the last stage's output, then classifies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits (B×C)."""
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        return self.head(h)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        """Return logits, every stage's output and the penultimate embedding."""
        h = self.stem(x)
        features = []
        for stage in self.stages:
            h = stage(h)
            features.append(h)
        embedding = self.head.embed(h)
        return ModelOutput(
            logits=self.head.classify(embedding), features=features, embedding=embedding
        )

    def split(self) -> tuple[nn.Module, list[nn.Module], nn.Module]:
        """Return (stem, [stage_1..stage_K], head) for model assembly."""
        return self.stem, list(self.stages), self.head


class ClassifierHead(nn.Module):
    """Global-average-pools (for conv features) and flattens, then applies one linear layer."""

    def __init__(self, in_features: int, num_classes: int, pool: bool = True) -> None:
        super().__init__()
        self.pool = pool
        self.fc = nn.Linear(in_features, num_classes)

    def embed(self, h: torch.Tensor) -> torch.Tensor:
        """Return the B×D embedding: spatial mean of conv features, or the flat input."""
        if self.pool and h.dim() > 2:
            h = h.mean(dim=tuple(range(2, h.dim())))
        return h.flatten(1)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Return logits from an embedding."""
        return self.fc(embedding)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Return logits from the last stage's output."""
        return self.classify(self.embed(h))
