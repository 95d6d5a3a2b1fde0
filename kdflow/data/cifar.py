"""CIFAR-10/100 from a local folder, in either official format (binary or python pickle)."""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from kdflow.errors import KdflowError, not_a_folder

IMAGE_BYTES = 3 * 32 * 32

# Folder names as the official archives extract, and the files each must hold.
LAYOUTS: dict[str, dict[str, Any]] = {
    "cifar10": {
        "bin": (
            "cifar-10-batches-bin",
            [f"data_batch_{i}.bin" for i in range(1, 6)],
            ["test_batch.bin"],
        ),
        "py": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
        "classes": 10,
    },
    "cifar100": {
        "bin": ("cifar-100-binary", ["train.bin"], ["test.bin"]),
        "py": ("cifar-100-python", ["train"], ["test"]),
        "classes": 100,
    },
}

# The official python files hold dicts of bytes, lists, ints and numpy arrays; nothing else
# may be constructed while unpickling, so a crafted file cannot run code.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, "latin1"); it only
    # turns text into bytes (torch's weights_only unpickler admits it for the same reason).
    ("_codecs", "encode"),
}


class ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global outside the CIFAR allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only the numpy types found in the official CIFAR files."""

    def find_class(self, module: str, name: str) -> Any:
        """Return the allowed global, or raise UnpicklingError for anything else."""
        if (module, name) not in _ALLOWED_GLOBALS:
            raise ForbiddenGlobalError(f"global {module}.{name} is not allowed")
        # numpy 2 moved numpy.core to numpy._core; files written by either must load.
        if module.startswith("numpy.core."):
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return getattr(importlib.import_module(module), name)


def restricted_load(path: Path) -> Any:
    """Return the object in a pickle file, admitting only CIFAR's numpy types."""
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(io.BufferedReader(handle), encoding="bytes").load()
    except ForbiddenGlobalError as exc:
        raise KdflowError(
            f"{path}: refused to unpickle ({exc}); official CIFAR python files hold only "
            "numpy arrays and lists"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise KdflowError(f"{path}: corrupt or truncated pickle ({reason})") from None


def _expected_layout(source: str) -> str:
    layout = LAYOUTS[source]
    bin_dir, bin_train, bin_test = layout["bin"]
    py_dir, py_train, py_test = layout["py"]
    return (
        f"expected a folder holding {bin_dir}/ ({', '.join(bin_train + bin_test)}) "
        f"or {py_dir}/ ({', '.join(py_train + py_test)}), as the official archives extract"
    )


def find_cifar_folder(source: str, root: Path) -> tuple[str, Path]:
    """Return ("bin" | "py", folder) for the first official layout found under `root`."""
    if not root.is_dir():
        raise KdflowError(
            f"data.path {str(root)!r} {not_a_folder(root)}; {_expected_layout(source)}"
        )
    for fmt in ("bin", "py"):
        folder_name, train_files, test_files = LAYOUTS[source][fmt]
        for candidate in (root / folder_name, root):
            if all((candidate / name).is_file() for name in train_files + test_files):
                return fmt, candidate
    raise KdflowError(f"no CIFAR files found in {str(root)!r}; {_expected_layout(source)}")


def _read_binary(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + IMAGE_BYTES
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % record:
        raise KdflowError(
            f"{path}: {raw.size} bytes is not a whole number of {record}-byte records "
            f"({label_bytes} label byte(s) + {IMAGE_BYTES} pixel bytes); the file is truncated "
            "or not a CIFAR binary file"
        )
    rows = raw.reshape(-1, record)
    # CIFAR-100 records carry (coarse, fine); the fine label is the last label byte.
    return rows[:, label_bytes:], rows[:, label_bytes - 1].astype(np.int64)


def _read_python(path: Path, source: str) -> tuple[np.ndarray, np.ndarray]:
    batch = restricted_load(path)
    label_key = b"labels" if source == "cifar10" else b"fine_labels"
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise KdflowError(f"{path}: expected a dict with b'data' and {label_key!r}")
    data = np.asarray(batch[b"data"])
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError):
        raise KdflowError(
            f"{path}: {label_key!r} must be a list of integer class indices; the file is not "
            "an official CIFAR python batch"
        ) from None
    if labels.ndim != 1:
        raise KdflowError(f"{path}: {label_key!r} has shape {labels.shape}; expected a flat list")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise KdflowError(
            f"{path}: data has shape {data.shape} and dtype {data.dtype}; "
            f"expected N×{IMAGE_BYTES} uint8"
        )
    if len(labels) != len(data):
        raise KdflowError(f"{path}: {len(labels)} labels for {len(data)} images")
    return data, labels


def load_cifar(source: str, root: Path) -> dict[str, Any]:
    """Return train/test uint8 images (N×3072, CHW order) and labels from a local CIFAR folder."""
    fmt, folder = find_cifar_folder(source, root)
    _, train_files, test_files = LAYOUTS[source][fmt]
    num_classes = LAYOUTS[source]["classes"]

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [
            _read_binary(folder / n, 1 if source == "cifar10" else 2)
            if fmt == "bin"
            else _read_python(folder / n, source)
            for n in names
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    x_train, y_train = read(train_files)
    x_test, y_test = read(test_files)
    for name, labels in (("train", y_train), ("test", y_test)):
        if labels.min() < 0 or labels.max() >= num_classes:
            raise KdflowError(
                f"{folder}: {name} labels span [{labels.min()}, {labels.max()}]; "
                f"{source} has classes 0..{num_classes - 1}"
            )
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "input_shape": (3, 32, 32),
        "num_classes": num_classes,
    }
