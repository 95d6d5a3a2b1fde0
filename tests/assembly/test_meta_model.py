"""The meta model of every zoo model, on 1-D signals and 2-D images."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdflow.assembly import boundary_shapes, build_meta_model, check_module_indices
from kdflow.errors import KdflowError
from kdflow.models import MODELS
from tests.assembly.conftest import NUM_CLASSES, seeded

INPUT_SHAPES = [(1, 40), (3, 32, 32)]
CASES = [(name, shape) for name in MODELS.names() for shape in INPUT_SHAPES]


@pytest.mark.parametrize(
    ("name", "input_shape"), CASES, ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in CASES]
)
def test_meta_model_has_the_target_s_boundaries_stem_and_head(name, input_shape):
    target = seeded(name, input_shape)
    assert len(target.stages) >= 2  # every zoo model can be assembled

    meta = build_meta_model(target)

    assert boundary_shapes(meta, input_shape) == boundary_shapes(target, input_shape)
    for mine, theirs in ((meta.stem, target.stem), (meta.head, target.head)):
        mine_state, their_state = mine.state_dict(), theirs.state_dict()
        assert mine_state.keys() == their_state.keys()
        assert all(torch.equal(mine_state[k], their_state[k]) for k in mine_state)
    # Nothing is shared: training the meta model must leave the target alone.
    target_tensors = {t.data_ptr() for t in target.state_dict().values()}
    assert not target_tensors & {t.data_ptr() for t in meta.state_dict().values()}
    # One shallow block per module: never more parameters than the target's module.
    for shallow, full in zip(meta.stages, target.stages, strict=True):
        assert sum(p.numel() for p in shallow.parameters()) <= sum(
            p.numel() for p in full.parameters()
        )
    x = torch.randn(2, *input_shape)
    assert meta.eval()(x).shape == (2, NUM_CLASSES)


def test_deep_targets_get_one_block_per_module():
    target = seeded("resnet20", (1, 40))
    meta = build_meta_model(target)
    assert [len(stage) for stage in target.stages] == [3, 3, 3]
    assert [len(stage) for stage in meta.stages] == [1, 1, 1]


def test_boundary_probe_leaves_the_model_untouched():
    model = seeded("resnet8", (1, 40)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    shapes = boundary_shapes(model, (1, 40))

    assert shapes == [(16, 40), (16, 40), (32, 20), (64, 10)]
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_model_with_one_module_cannot_be_assembled():
    model = seeded("cnn3", (1, 40))
    model.stages = nn.ModuleList([model.stages[0]])

    with pytest.raises(KdflowError, match="has 1 stage module; model assembly needs at least 2"):
        build_meta_model(model)


def test_module_indices_must_be_the_model_s():
    check_module_indices([0, 1, 2], 3, "resnet14")
    with pytest.raises(KdflowError) as error:
        check_module_indices([0, 1], 3, "resnet14")
    assert str(error.value) == (
        "assembly.modules [0, 1] does not match resnet14's 3 stage modules; "
        "set assembly.modules: [0, 1, 2]"
    )
