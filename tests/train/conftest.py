"""Tiny synthetic splits and trainer configs the trainer tests build for themselves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from kdflow.config import OptimParams
from kdflow.data.tensors import Split
from kdflow.models import build_model
from kdflow.models.base import KDModel
from kdflow.train.trainer import FitConfig

INPUT_SHAPE = (1, 16)
NUM_CLASSES = 4


def gaussian_blobs(n: int, seed: int) -> Split:
    """Return n samples of NUM_CLASSES overlapping Gaussian blobs (fixed class means), N×1×16."""
    means = torch.randn(NUM_CLASSES, *INPUT_SHAPE, generator=torch.Generator().manual_seed(99))
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % NUM_CLASSES
    x = means[y] + 1.5 * torch.randn(n, *INPUT_SHAPE, generator=generator)
    return Split(x, y, torch.arange(n))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run torch on one thread: these models are tiny, and idle threads spinning on a loaded
    machine slowed a 3-epoch fit from 0.04 s to 4 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def blobs() -> tuple[Split, Split]:
    """Return (train, val): 256 and 64 samples of the same four blobs."""
    return gaussian_blobs(256, seed=1), gaussian_blobs(64, seed=2)


@pytest.fixture
def new_model() -> Callable[[int], KDModel]:
    """Return a factory of MLPs seeded as a freshly started process would build them."""

    def make(seed: int = 0) -> KDModel:
        torch.manual_seed(seed)
        return build_model("mlp", INPUT_SHAPE, NUM_CLASSES)

    return make


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., FitConfig]:
    """Return a factory of small CPU FitConfigs: make_config(epochs=4, checkpoint=None, ...)."""

    def make(
        epochs: int = 4,
        *,
        checkpoint: str | None = None,
        run_key: str = "key",
        seed: int = 0,
        **optim: object,
    ) -> FitConfig:
        settings: dict[str, object] = {"batch_size": 64, "lr": 0.05} | optim
        return FitConfig(
            optim=OptimParams(epochs=epochs, **settings),
            seed=seed,
            device=torch.device("cpu"),
            checkpoint=tmp_path / checkpoint if checkpoint else None,
            run_key=run_key,
        )

    return make
