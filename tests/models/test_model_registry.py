"""build_model and the MODELS registry: names, errors, determinism."""

from __future__ import annotations

import pytest
import torch

from kdflow.errors import KdflowError
from kdflow.models import MODELS, build_model
from kdflow.models.base import ClassifierHead, KDModel

EXPECTED_NAMES = {
    "cnn3",
    "mlp",
    *(f"resnet{depth}" for depth in (8, 14, 20, 32, 44, 56, 110)),
    "resnet8x4",
    "resnet32x4",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "vgg8",
    "vgg11",
    "vgg13",
}


def test_registry_holds_the_whole_zoo() -> None:
    assert set(MODELS.names()) == EXPECTED_NAMES


def test_unknown_name_error_lists_known_names() -> None:
    with pytest.raises(KdflowError) as excinfo:
        build_model("resnet21", (3, 32, 32), 10)
    message = str(excinfo.value)
    assert "resnet21" in message
    for name in EXPECTED_NAMES:
        assert name in message


@pytest.mark.parametrize("input_shape", [(40,), (1, 3, 8, 8), (), (0, 40), (3, 32, -1)])
def test_bad_input_shape_is_a_clear_error(input_shape: tuple[int, ...]) -> None:
    with pytest.raises(KdflowError, match="input_shape"):
        build_model("resnet8", input_shape, 10)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_builder_returns_a_kdmodel_with_stages_and_classifier_head(name: str) -> None:
    model = build_model(name, (1, 40), 10)
    assert isinstance(model, KDModel)
    assert isinstance(model.head, ClassifierHead)
    assert len(model.stages) >= 2
    assert len(model.stage_channels) == len(model.stages)


def test_same_seed_builds_identical_weights() -> None:
    torch.manual_seed(0)
    first = build_model("resnet8", (3, 32, 32), 10).state_dict()
    torch.manual_seed(0)
    second = build_model("resnet8", (3, 32, 32), 10).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
