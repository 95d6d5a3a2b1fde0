"""Small data written by the tests themselves: fake CIFAR folders, image trees, raw arrays."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from kdflow.data.cifar import IMAGE_BYTES

RECORDS_PER_FILE = 4


@dataclass
class FakeCifar:
    """A CIFAR folder written to disk and the exact arrays it holds."""

    root: Path  # the folder a user points data.path at (holds the batches folder)
    folder: Path  # the batches folder itself (cifar-10-batches-bin, ...)
    files: dict[str, Path]  # file name → path
    x_train: np.ndarray  # N×3072 uint8
    y_train: np.ndarray  # fine labels for CIFAR-100
    x_test: np.ndarray
    y_test: np.ndarray


# (folder, train files, test files, number of fine classes) as the official archives extract.
CIFAR_LAYOUTS = {
    ("cifar10", "bin"): (
        "cifar-10-batches-bin",
        [f"data_batch_{i}.bin" for i in range(1, 6)],
        ["test_batch.bin"],
        10,
    ),
    ("cifar10", "py"): (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        10,
    ),
    ("cifar100", "bin"): ("cifar-100-binary", ["train.bin"], ["test.bin"], 100),
    ("cifar100", "py"): ("cifar-100-python", ["train"], ["test"], 100),
}


def _write_file(path: Path, source: str, fmt: str, images: np.ndarray, fine: np.ndarray) -> None:
    coarse = fine // 5  # CIFAR-100's 20 superclasses; differs from fine so a mix-up shows
    if fmt == "bin":
        labels = fine[:, None] if source == "cifar10" else np.stack([coarse, fine], axis=1)
        np.concatenate([labels.astype(np.uint8), images], axis=1).tofile(path)
        return
    batch: dict[bytes, object] = {
        b"batch_label": f"fake {path.name}".encode(),
        b"data": images,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    if source == "cifar10":
        batch[b"labels"] = [int(label) for label in fine]
    else:
        batch[b"fine_labels"] = [int(label) for label in fine]
        batch[b"coarse_labels"] = [int(label) for label in coarse]
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def write_fake_cifar(root: Path, source: str, fmt: str, seed: int = 0) -> FakeCifar:
    """Write a tiny CIFAR folder in an official layout under `root`; return what it holds."""
    folder_name, train_files, test_files, num_classes = CIFAR_LAYOUTS[(source, fmt)]
    folder = root / folder_name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    files = {}
    for name in train_files + test_files:
        images = rng.integers(0, 256, size=(RECORDS_PER_FILE, IMAGE_BYTES), dtype=np.uint8)
        labels = rng.integers(0, num_classes, size=RECORDS_PER_FILE)
        labels[0] = num_classes - 1  # the top class appears, so an off-by-one would fail
        files[name] = folder / name
        _write_file(files[name], source, fmt, images, labels)
        written[name] = (images, labels)

    def join(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.concatenate([written[n][0] for n in names]),
            np.concatenate([written[n][1] for n in names]),
        )

    x_train, y_train = join(train_files)
    x_test, y_test = join(test_files)
    return FakeCifar(root, folder, files, x_train, y_train, x_test, y_test)


@pytest.fixture
def fake_cifar(tmp_path: Path) -> Callable[[str, str], FakeCifar]:
    """Return a factory writing a fake CIFAR folder (source, "bin" | "py") under tmp_path."""

    def make(source: str, fmt: str) -> FakeCifar:
        return write_fake_cifar(tmp_path / f"{source}-{fmt}", source, fmt)

    return make


def _balanced_raw(
    num_classes: int = 3,
    per_class: int = 20,
    test_per_class: int = 5,
    length: int = 4,
    seed: int = 0,
) -> dict[str, object]:
    """Return raw source arrays (as a source loader returns them) with balanced classes."""
    rng = np.random.default_rng(seed)
    y_train = np.tile(np.arange(num_classes), per_class).astype(np.int64)
    y_test = np.tile(np.arange(num_classes), test_per_class).astype(np.int64)
    return {
        "x_train": rng.normal(size=(len(y_train), length)).astype(np.float32),
        "y_train": y_train,
        "x_test": rng.normal(size=(len(y_test), length)).astype(np.float32),
        "y_test": y_test,
        "input_shape": (1, length),
        "num_classes": num_classes,
    }


@pytest.fixture
def make_raw() -> Callable[..., dict[str, object]]:
    """Return a factory of raw source arrays: make_raw(num_classes, per_class, ...)."""
    return _balanced_raw
