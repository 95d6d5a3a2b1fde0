"""The model zoo: every architecture registers itself in MODELS; build_model builds one by name."""

from __future__ import annotations

from collections.abc import Callable

from kdflow.models.base import KDModel
from kdflow.models.layers import check_input_shape
from kdflow.registry import Registry

MODELS: Registry[Callable[[tuple[int, ...], int], KDModel]] = Registry("model")


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> KDModel:
    """Return a freshly initialised model `name` for inputs of input_shape (no batch dim).

    (C, L) builds the 1-D variant for signals, (C, H, W) the 2-D variant for images.
    """
    builder = MODELS.get(name)
    return builder(check_input_shape(input_shape), num_classes)


# The architecture modules import MODELS from here to register themselves, so they load last.
from kdflow.models import cnn, mlp, resnet, vgg, wrn  # noqa: E402, F401
