"""Assembly (ALGORITHMS §7.3, §8): the assembled model is exactly the chain of its modules."""

from __future__ import annotations

import copy

import pytest
import torch

from kdflow.assembly import assemble, combine_module_records, incubation_model
from kdflow.assembly.assemble import recorded_time_totals, training_time_totals
from kdflow.errors import KdflowError
from kdflow.models.resnet import ResNet
from kdflow.train.checkpoint import load_model, save_model
from tests.assembly.conftest import NUM_CLASSES, seeded, trained_looking_meta

SIGNAL = (1, 16)


def _perturbed(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Return `module` with every float tensor (weights and BN statistics) moved: 'trained'."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.rand(tensor.shape, generator=generator))
    return module


def test_assembled_forward_equals_the_chain_of_incubated_modules():
    meta = trained_looking_meta("resnet14", SIGNAL)
    modules = [
        _perturbed(incubation_model(meta, seeded("resnet14", SIGNAL, seed=i), i).module, i)
        for i in range(3)
    ]

    model = assemble(seeded("resnet14", SIGNAL, seed=9), modules, stem=meta.stem, head=meta.head)

    assert isinstance(model, ResNet)
    x = torch.randn(8, *SIGNAL)
    for part in (model, meta, *modules):
        part.eval()
    with torch.no_grad():
        h = meta.stem(x)
        for module in modules:
            h = module(h)
        assert torch.equal(model(x), meta.head(h))


def test_an_assembled_model_is_an_ordinary_zoo_model_file(tmp_path):
    meta = trained_looking_meta("resnet14", SIGNAL)
    modules = [_perturbed(copy.deepcopy(s), 3) for s in seeded("resnet14", SIGNAL).stages]
    model = assemble(seeded("resnet14", SIGNAL), modules, stem=meta.stem, head=meta.head)
    meta_data = {"arch": "resnet14", "input_shape": list(SIGNAL), "num_classes": NUM_CLASSES}

    save_model(tmp_path / "dma.pt", model, {**meta_data, "data_hash": "h"})
    loaded, _ = load_model(tmp_path / "dma.pt")

    x = torch.randn(4, *SIGNAL)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_m2m_chain_keeps_the_student_s_own_stem_and_head():
    student = seeded("wrn_16_2", SIGNAL)
    stem, head = copy.deepcopy(student.stem.state_dict()), copy.deepcopy(student.head.state_dict())
    modules = [_perturbed(copy.deepcopy(s), 5) for s in seeded("wrn_16_2", SIGNAL, 1).stages]

    model = assemble(student, modules)

    for key, value in stem.items():
        assert torch.equal(model.stem.state_dict()[key], value)
    for key, value in head.items():
        assert torch.equal(model.head.state_dict()[key], value)
    for stage, module in zip(model.stages, modules, strict=True):
        for key, value in module.state_dict().items():
            assert torch.equal(stage.state_dict()[key], value)


def test_modules_of_another_architecture_are_refused():
    deeper = seeded("resnet20", SIGNAL).stages

    with pytest.raises(KdflowError, match="the trained stage 0 does not fit ResNet"):
        assemble(seeded("resnet14", SIGNAL), list(deeper))
    with pytest.raises(KdflowError, match="cannot assemble 2 modules into ResNet with 3 stages"):
        assemble(seeded("resnet14", SIGNAL), list(deeper)[:2])


def test_module_records_keep_only_reproducible_figures():
    records = [
        {"module": i, "val_acc": 0.5, "test_acc": 0.4, "train_seconds": s, "stage": f"m@{i}"}
        for i, s in enumerate([2.0, 5.0, 3.0])
    ]

    combined = combine_module_records(records)

    assert combined == {
        "modules": [
            {"module": i, "val_acc": 0.5, "test_acc": 0.4, "stage": f"m@{i}"} for i in range(3)
        ]
    }


def test_training_time_counts_every_module_and_the_slowest():
    totals = training_time_totals(4.0, [2.0, 5.0, 3.0], 6.0)

    assert totals["train_seconds"] == 4.0 + 10.0 + 6.0
    assert totals["train_seconds_parallel"] == 4.0 + 5.0 + 6.0
    assert totals["module_seconds_sum"] == 10.0 and totals["module_seconds_max"] == 5.0


def test_time_totals_come_from_the_run_records_or_not_at_all(tmp_path, monkeypatch):
    from kdflow.io import RUNS_DIR, json_text

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    (tmp_path / RUNS_DIR).mkdir(parents=True)
    for stage, seconds in (("meta", 4.0), ("incubate@0", 2.0), ("incubate@1", 5.0)):
        record = {"stage": stage, "train_seconds": seconds}
        (tmp_path / RUNS_DIR / f"{stage}.json").write_text(json_text(record))

    totals = recorded_time_totals("meta", ["incubate@0", "incubate@1"], 1.0)

    assert totals["train_seconds"] == 12.0 and totals["train_seconds_parallel"] == 10.0
    # A module restored from the DVC cache has no record: no totals rather than wrong ones.
    assert recorded_time_totals("meta", ["incubate@0", "incubate@2"], 1.0) == {}
