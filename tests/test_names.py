"""The torch-free name lists used by params validation match the real registries."""

from kdflow.losses import METHODS
from kdflow.models import MODELS
from kdflow.names import METHOD_NAMES, MODEL_NAMES


def test_model_names_match_registry() -> None:
    assert sorted(MODEL_NAMES) == MODELS.names()


def test_method_names_match_registry() -> None:
    assert sorted(METHOD_NAMES) == METHODS.names()
