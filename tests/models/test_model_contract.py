"""The KDModel contract, checked for every registered model on 1-D signals and 2-D images."""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass

import pytest
import torch

from kdflow.models import MODELS, build_model
from kdflow.models.base import KDModel

BATCH = 2
NUM_CLASSES = 7
INPUT_SHAPES = [(1, 40), (3, 32, 32), (1, 8, 8)]
CASES = [(name, shape) for name in MODELS.names() for shape in INPUT_SHAPES]


def _case_id(case: tuple[str, tuple[int, ...]]) -> str:
    """Return a test id such as resnet20-3x32x32."""
    name, shape = case
    return f"{name}-{'x'.join(map(str, shape))}"


def _seeded_model(name: str, input_shape: tuple[int, ...]) -> KDModel:
    """Return a model built under torch.manual_seed(0), in eval mode."""
    torch.manual_seed(0)
    return build_model(name, input_shape, NUM_CLASSES).eval()


@dataclass
class Case:
    """One model on one input shape, with a batch to feed it."""

    name: str
    input_shape: tuple[int, ...]
    model: KDModel  # eval mode; tests that change it work on a copy
    x: torch.Tensor  # B×input_shape


# Module scope makes pytest run all tests of one case together, so each model is built once
# and only one is alive at a time.
@pytest.fixture(scope="module", params=CASES, ids=_case_id)
def case(request: pytest.FixtureRequest) -> Case:
    """Return a seeded eval-mode model and a random batch for one (name, input_shape)."""
    name, input_shape = request.param
    x = torch.randn((BATCH, *input_shape), generator=torch.Generator().manual_seed(1))
    return Case(name, input_shape, _seeded_model(name, input_shape), x)


def test_forward_features_shapes(case: Case) -> None:
    with torch.no_grad():
        output = case.model.forward_features(case.x)
    assert output.logits.shape == (BATCH, NUM_CLASSES)
    assert len(output.features) == len(case.model.stages)
    spatial_dims = 0 if case.name == "mlp" else len(case.input_shape) - 1
    for feature, width in zip(output.features, case.model.stage_channels, strict=True):
        assert feature.shape[:2] == (BATCH, width)
        assert feature.dim() == 2 + spatial_dims
        assert min(feature.shape) >= 1
    assert output.embedding.shape == (BATCH, case.model.head.fc.in_features)


def test_split_chain_equals_forward(case: Case) -> None:
    stem, stages, head = case.model.split()
    with torch.no_grad():
        logits = case.model(case.x)
        h = stem(case.x)
        for stage in stages:
            h = stage(h)
        assert torch.equal(head(h), logits)
        assert torch.equal(case.model.forward_features(case.x).logits, logits)


def test_shallow_stage_matches_stage_shapes(case: Case) -> None:
    with torch.no_grad():
        h = case.model.stem(case.x)
        for i, stage in enumerate(case.model.stages):
            shallow = case.model.shallow_stage(i).eval()
            shared = {id(p) for p in shallow.parameters()} & {id(p) for p in stage.parameters()}
            assert not shared
            out = stage(h)
            assert shallow(h).shape == out.shape
            h = out


def test_state_dict_round_trip(case: Case) -> None:
    model = copy.deepcopy(case.model)
    # One training-mode pass moves the BN running stats, so the buffers must travel too.
    with torch.no_grad():
        model.train()(case.x)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = copy.deepcopy(case.model)
    with torch.no_grad():
        for parameter in restored.parameters():
            parameter.zero_()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        assert torch.equal(restored(case.x), model.eval()(case.x))


IMAGE_CASES = [case for case in CASES if len(case[1]) == 3]


@pytest.mark.parametrize(("name", "input_shape"), IMAGE_CASES, ids=map(_case_id, IMAGE_CASES))
def test_channels_last_equals_contiguous(name: str, input_shape: tuple[int, ...]) -> None:
    model = _seeded_model(name, input_shape)
    x = torch.randn((BATCH, *input_shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        actual = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
