"""The embedded sources (mnist1d, digits) and ImageFolder trees of real PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdflow.config import DataParams
from kdflow.data.sources import SOURCES, load_digits, load_imagefolder, load_mnist1d, load_source
from kdflow.errors import KdflowError

COLOURS = {"cat": (250, 10, 10), "dog": (10, 250, 10), "eel": (10, 10, 250)}  # one per class


def _write_pngs(folder: Path, colour: tuple[int, int, int], count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (10, 6), colour).save(folder / f"img_{i}.png")  # not square on purpose


def _assert_images_match_labels(x: np.ndarray, y: np.ndarray, classes: list[str], size: int):
    assert x.dtype == np.uint8
    assert x.shape == (len(y), 3 * size * size)
    planes = x.reshape(len(x), 3, size * size)  # CHW: each channel is one solid plane
    for image, label in zip(planes, y, strict=True):
        expected = np.array(COLOURS[classes[label]], dtype=np.uint8)[:, None]
        np.testing.assert_array_equal(image, np.broadcast_to(expected, image.shape))


def test_imagefolder_flat_tree_is_split_and_resized(tmp_path):
    for name, colour in COLOURS.items():
        _write_pngs(tmp_path / name, colour, 5)
    (tmp_path / "cat" / "notes.txt").write_text("not an image, skipped by suffix")
    params = DataParams(source="imagefolder", path=str(tmp_path), image_size=8, test_fraction=0.2)

    raw = load_imagefolder(params)

    assert raw["class_names"] == ["cat", "dog", "eel"]
    assert raw["num_classes"] == 3
    assert raw["input_shape"] == (3, 8, 8)
    assert np.bincount(raw["y_train"]).tolist() == [4, 4, 4]
    assert np.bincount(raw["y_test"]).tolist() == [1, 1, 1]
    _assert_images_match_labels(raw["x_train"], raw["y_train"], raw["class_names"], 8)
    _assert_images_match_labels(raw["x_test"], raw["y_test"], raw["class_names"], 8)


def test_imagefolder_train_test_tree_keeps_the_given_split(tmp_path):
    for name, colour in COLOURS.items():
        _write_pngs(tmp_path / "train" / name, colour, 3)
        _write_pngs(tmp_path / "test" / name, colour, 2)
    params = DataParams(source="imagefolder", path=str(tmp_path), image_size=4)

    raw = load_source(params)

    assert raw["input_shape"] == (3, 4, 4)
    assert np.bincount(raw["y_train"]).tolist() == [3, 3, 3]
    assert np.bincount(raw["y_test"]).tolist() == [2, 2, 2]
    _assert_images_match_labels(raw["x_train"], raw["y_train"], raw["class_names"], 4)
    _assert_images_match_labels(raw["x_test"], raw["y_test"], raw["class_names"], 4)


def test_imagefolder_refuses_a_file_that_only_looks_like_a_png(tmp_path):
    for name, colour in COLOURS.items():
        _write_pngs(tmp_path / name, colour, 3)
    fake = tmp_path / "dog" / "broken.png"
    fake.write_text("this is text, not a PNG")

    with pytest.raises(KdflowError) as caught:
        load_imagefolder(DataParams(source="imagefolder", path=str(tmp_path)))

    assert str(fake) in str(caught.value)
    assert "not a readable image" in str(caught.value)


def test_imagefolder_test_classes_must_match_train(tmp_path):
    for name, colour in COLOURS.items():
        _write_pngs(tmp_path / "train" / name, colour, 2)
    for name in ("cat", "dog"):
        _write_pngs(tmp_path / "test" / name, COLOURS[name], 2)

    with pytest.raises(KdflowError, match="differ from the train tree"):
        load_imagefolder(DataParams(source="imagefolder", path=str(tmp_path)))


@pytest.mark.parametrize("make_root", ["nonexistent", "one_class"])
def test_imagefolder_bad_root_names_the_path_and_layout(tmp_path, make_root):
    root = tmp_path / "images"
    if make_root == "one_class":
        _write_pngs(root / "cat", COLOURS["cat"], 2)

    with pytest.raises(KdflowError) as caught:
        load_imagefolder(DataParams(source="imagefolder", path=str(root)))

    assert str(root) in str(caught.value)
    assert "root/<class>/" in str(caught.value)


def test_digits_shapes_and_seeded_split():
    raw = load_digits(DataParams(source="digits", seed=0, test_fraction=0.2))
    again = load_digits(DataParams(source="digits", seed=0, test_fraction=0.2))
    other = load_digits(DataParams(source="digits", seed=1, test_fraction=0.2))

    assert raw["input_shape"] == (1, 8, 8) and raw["num_classes"] == 10
    assert raw["x_train"].dtype == np.float32 and raw["y_train"].dtype == np.int64
    assert raw["x_train"].shape[1] == 64
    assert len(raw["y_train"]) + len(raw["y_test"]) == 1797  # all of scikit-learn's digits
    assert abs(len(raw["y_test"]) - 0.2 * 1797) <= 10  # rounded per class
    assert set(np.unique(raw["y_test"])) == set(range(10))
    assert raw["x_train"].min() >= 0.0 and raw["x_train"].max() <= 1.0
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(raw[key], again[key])
    assert not np.array_equal(raw["x_test"], other["x_test"])


def test_mnist1d_shapes_and_seed():
    raw = load_mnist1d(DataParams(num_samples=200, seed=0))
    again = load_mnist1d(DataParams(num_samples=200, seed=0))
    other = load_mnist1d(DataParams(num_samples=200, seed=1))

    assert raw["input_shape"] == (1, 40) and raw["num_classes"] == 10
    assert raw["x_train"].shape == (160, 40) and raw["x_test"].shape == (40, 40)
    assert raw["x_train"].dtype == np.float32 and raw["y_train"].dtype == np.int64
    assert set(np.unique(raw["y_train"])) == set(range(10))
    assert np.isfinite(raw["x_train"]).all()
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(raw[key], again[key])
    assert not np.array_equal(raw["x_train"], other["x_train"])


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(KdflowError) as caught:
        SOURCES.get("svhn")

    for name in ("mnist1d", "digits", "cifar10", "cifar100", "imagefolder"):
        assert name in str(caught.value)
