"""The model zoo by name; importing this package imports neither torch nor any architecture.

MODELS declares which architecture module defines each model; build_model builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kdflow.registry import Registry

if TYPE_CHECKING:
    from kdflow.models.base import KDModel


def _zoo(module: str, *names: str) -> dict[str, str]:
    return {name: f"kdflow.models.{module}" for name in names}


MODELS: Registry[Callable[[tuple[int, ...], int], KDModel]] = Registry(
    "model",
    modules={
        **_zoo("cnn", "cnn3"),
        **_zoo("mlp", "mlp"),
        **_zoo(
            "resnet",
            "resnet8",
            "resnet14",
            "resnet20",
            "resnet32",
            "resnet44",
            "resnet56",
            "resnet110",
            "resnet8x4",
            "resnet32x4",
        ),
        **_zoo("vgg", "vgg8", "vgg11", "vgg13"),
        **_zoo("wrn", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"),
    },
)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> KDModel:
    """Return a freshly initialised model `name` for inputs of input_shape (no batch dim).

    (C, L) builds the 1-D variant for signals, (C, H, W) the 2-D variant for images.
    """
    from kdflow.models.layers import check_input_shape

    # Every architecture, not only `name`'s: dvc.yaml gives each model-building stage the
    # whole kdflow/models folder as its dep, which is honest only if every such stage
    # imports all of it (the import-closure test checks this through sys.modules).
    MODELS.import_all()
    builder = MODELS.get(name)
    return builder(check_input_shape(input_shape), num_classes)
