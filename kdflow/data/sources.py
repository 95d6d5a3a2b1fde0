"""Data sources by name: each returns raw train/test arrays; `prepare` does the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdflow.config import DataParams
from kdflow.data import SOURCES
from kdflow.errors import KdflowError, not_a_folder

RawData = dict[
    str, Any
]  # x_train, y_train, x_test, y_test, input_shape, num_classes[, class_names]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (kept, carved) index arrays: `fraction` of each class (at least one) is carved."""
    rng = np.random.default_rng(seed)
    carved = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = max(1, round(fraction * len(members)))
        if count >= len(members):
            raise KdflowError(
                f"class {cls} has {len(members)} sample(s): too few to carve a split of "
                f"fraction {fraction}; use more data or a smaller fraction"
            )
        carved.append(rng.permutation(members)[:count])
    carved_idx = np.sort(np.concatenate(carved))
    kept_idx = np.setdiff1d(np.arange(len(labels)), carved_idx)
    return kept_idx, carved_idx


@SOURCES.register("mnist1d")
def load_mnist1d(params: DataParams) -> RawData:
    """Return MNIST-1D generated offline by the mnist1d package (seeded)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = params.num_samples
    args.seed = params.seed
    data = make_dataset(args)
    return {
        "x_train": np.asarray(data["x"], dtype=np.float32),
        "y_train": np.asarray(data["y"], dtype=np.int64),
        "x_test": np.asarray(data["x_test"], dtype=np.float32),
        "y_test": np.asarray(data["y_test"], dtype=np.int64),
        "input_shape": (1, np.asarray(data["x"]).shape[1]),
        "num_classes": 10,
    }


@SOURCES.register("digits")
def load_digits(params: DataParams) -> RawData:
    """Return scikit-learn's 8×8 digits with a stratified, seeded test split carved out."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(y, params.test_fraction, params.seed)
    return {
        "x_train": x[train_idx],
        "y_train": y[train_idx],
        "x_test": x[test_idx],
        "y_test": y[test_idx],
        "input_shape": (1, 8, 8),
        "num_classes": 10,
    }


def _cifar(params: DataParams) -> RawData:
    from kdflow.data.cifar import load_cifar

    assert params.path is not None  # DataParams requires it for this source
    return load_cifar(params.source, Path(params.path))


SOURCES.register("cifar10")(_cifar)
SOURCES.register("cifar100")(_cifar)


def _read_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise KdflowError(f"{path}: not a readable image ({exc})") from None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).reshape(-1)  # CHW, flat


def _scan_class_folders(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise KdflowError(
            f"{root}: found {len(classes)} class folder(s); expected one subfolder per class "
            "(root/<class>/<image>.png), at least two"
        )
    samples = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((root / name).rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    return classes, samples


@SOURCES.register("imagefolder")
def load_imagefolder(params: DataParams) -> RawData:
    """Return images from root/<class>/*.png (or root/train and root/test trees), resized."""
    assert params.path is not None  # DataParams requires it for this source
    root = Path(params.path)
    if not root.is_dir():
        raise KdflowError(
            f"data.path {str(root)!r} {not_a_folder(root)}; expected a folder with one subfolder "
            "per class (root/<class>/<image>.png), optionally split into root/train and root/test"
        )
    size = params.image_size

    def load(
        tree: Path, classes: list[str] | None = None
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        found, samples = _scan_class_folders(tree)
        if classes is not None and found != classes:
            raise KdflowError(
                f"{tree}: class folders {found} differ from the train tree's {classes}"
            )
        if not samples:
            raise KdflowError(f"{tree}: no images with suffix {sorted(IMAGE_SUFFIXES)}")
        x = np.stack([_read_image(path, size) for path, _ in samples])
        y = np.array([label for _, label in samples], dtype=np.int64)
        return found, x, y

    if (root / "train").is_dir() and (root / "test").is_dir():
        classes, x_train, y_train = load(root / "train")
        _, x_test, y_test = load(root / "test", classes)
    else:
        classes, x, y = load(root)
        train_idx, test_idx = stratified_split(y, params.test_fraction, params.seed)
        x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "input_shape": (3, size, size),
        "num_classes": len(classes),
        "class_names": classes,
    }


def load_source(params: DataParams) -> RawData:
    """Return the raw arrays of the configured source."""
    return SOURCES.get(params.source)(params)
