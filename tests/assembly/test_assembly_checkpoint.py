"""Meta and per-module checkpoints: rebuilt from their metadata, checked against the meta model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdflow.assembly import (
    assembly_model_meta,
    boundary_shapes,
    check_same_meta,
    incubation_model,
    load_assembly_model,
    m2m_pair,
)
from kdflow.errors import KdflowError
from kdflow.train.checkpoint import save_model
from tests.assembly.conftest import NUM_CLASSES, seeded, trained_looking_meta

SIGNAL = (1, 16)
BASE = {
    "arch": "resnet14",
    "input_shape": list(SIGNAL),
    "num_classes": NUM_CLASSES,
    "data_hash": "h",
}


def _round_trip(path: Path, model: torch.nn.Module, role: str, **info) -> torch.nn.Module:
    save_model(path, model, {**BASE, **assembly_model_meta(role, model=model, **info)})
    loaded, meta = load_assembly_model(
        path, role=role, target="resnet14", expect={"data_hash": "h"}
    )
    assert meta["assembly"]["role"] == role
    x = torch.randn(4, *SIGNAL)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))
    return loaded


def test_meta_incubate_and_m2m_checkpoints_round_trip(tmp_path):
    meta = trained_looking_meta("resnet14", SIGNAL)
    _round_trip(tmp_path / "meta.pt", meta, "meta")
    for i in range(3):
        hybrid = incubation_model(meta, seeded("resnet14", SIGNAL, seed=1), i)
        loaded = _round_trip(tmp_path / f"incubate-{i}.pt", hybrid, "incubate", module=i)
        assert (loaded.owns_stem, loaded.owns_head) == (i == 0, i == 2)
    student = seeded("wrn_16_2", SIGNAL)
    pair = m2m_pair(
        meta, student, 1, boundary_shapes(meta, SIGNAL), boundary_shapes(student, SIGNAL)
    )
    loaded = _round_trip(tmp_path / "m2m.pt", pair, "m2m", module=1, student="wrn_16_2")
    assert loaded.index == 1 and loaded.module.stitch_in.out_channels == 32
    last = m2m_pair(
        meta, student, 2, boundary_shapes(meta, SIGNAL), boundary_shapes(student, SIGNAL)
    )
    loaded = _round_trip(tmp_path / "m2m-2.pt", last, "m2m", module=2, student="wrn_16_2")
    assert loaded.owns_head and isinstance(loaded.module.stitch_out, torch.nn.Identity)


def test_a_module_checkpoint_that_trained_other_parts_is_refused(tmp_path):
    meta = trained_looking_meta("resnet14", SIGNAL)
    hybrid = incubation_model(meta, seeded("resnet14", SIGNAL), 0)
    info = assembly_model_meta("incubate", model=hybrid, module=0)
    info["assembly"]["trains"] = ["stages.0."]  # written when module 0 did not own the stem
    save_model(tmp_path / "old.pt", hybrid, {**BASE, **info})

    with pytest.raises(KdflowError, match="old.pt trained \\['stages.0.'\\], not the"):
        load_assembly_model(tmp_path / "old.pt", role="incubate", target="resnet14")


def test_a_checkpoint_of_another_role_or_target_is_refused(tmp_path):
    meta = trained_looking_meta("resnet14", SIGNAL)
    info = assembly_model_meta("meta", model=meta)
    save_model(tmp_path / "meta.pt", meta, {**BASE, **info})

    with pytest.raises(
        KdflowError, match="meta.pt holds role 'meta', not the 'incubate' checkpoint"
    ):
        load_assembly_model(tmp_path / "meta.pt", role="incubate", target="resnet14")
    with pytest.raises(KdflowError, match="built for assembly.target 'resnet14', not 'resnet20'"):
        load_assembly_model(tmp_path / "meta.pt", role="meta", target="resnet20")


def test_a_module_incubated_in_another_meta_model_is_refused():
    meta = trained_looking_meta("resnet14", SIGNAL)
    hybrid = incubation_model(meta, seeded("resnet14", SIGNAL), 0)
    check_same_meta(hybrid, meta, "incubate/0.pt")  # its own meta model: fine
    with torch.no_grad():
        meta.stem[1].running_mean.add_(1e-3)  # module 0 owns the stem: not the meta's part
    check_same_meta(hybrid, meta, "incubate/0.pt")

    with torch.no_grad():
        meta.stages[2][0].bn1.running_mean.add_(1e-3)  # the meta model was retrained since

    with pytest.raises(KdflowError, match="incubate/0.pt was trained inside another meta model"):
        check_same_meta(hybrid, meta, "incubate/0.pt")
