"""Wide ResNets: sizes against the published figures; the last stage ends activated."""

from __future__ import annotations

import pytest
import torch

from kdflow.models import build_model


@pytest.mark.parametrize(("name", "published"), [("wrn_16_2", 0.70e6), ("wrn_40_2", 2.26e6)])
def test_parameter_count_matches_published(name: str, published: float) -> None:
    model = build_model(name, (3, 32, 32), 100)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(published, rel=0.02)


def test_last_stage_ends_with_bn_relu() -> None:
    model = build_model("wrn_16_1", (3, 32, 32), 10)
    last, shallow_last = model.stages[-1], model.shallow_stage(len(model.stages) - 1)
    for stage in (last, shallow_last):
        assert isinstance(stage[-2], torch.nn.BatchNorm2d)
        assert isinstance(stage[-1], torch.nn.ReLU)
