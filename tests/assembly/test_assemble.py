"""Assembly (docs/algorithms.md): the assembled model is the chain of its trained modules only."""

from __future__ import annotations

import copy

import pytest
import torch

from kdflow.assembly import (
    HybridModel,
    assemble,
    assembly_model_meta,
    boundary_shapes,
    combine_module_records,
    incubation_model,
    load_assembly_model,
    m2m_pair,
)
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


def _incubated(meta, name: str = "resnet14", shape=SIGNAL) -> list:
    """Return the K incubated hybrids of `name`, each moved by 'training' (its trained parts)."""
    hybrids = []
    for i in range(3):
        hybrid = incubation_model(meta, seeded(name, shape, seed=i), i)
        for part in hybrid.trained_parts():
            _perturbed(part, i)
        hybrids.append(hybrid)
    return hybrids


def test_assembled_forward_equals_the_chain_of_incubated_modules():
    meta = trained_looking_meta("resnet14", SIGNAL)
    hybrids = _incubated(meta)

    model = assemble(seeded("resnet14", SIGNAL, seed=9), hybrids)

    assert isinstance(model, ResNet)
    x = torch.randn(8, *SIGNAL)
    for part in (model, *hybrids):
        part.eval()
    with torch.no_grad():
        h = hybrids[0].stem(x)
        for hybrid in hybrids:
            h = hybrid.module(h)
        assert torch.equal(model(x), hybrids[-1].head(h))


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items() if v.is_floating_point()}


@pytest.mark.parametrize("seed", [0, 1])
def test_every_assembled_tensor_is_a_trained_module_s_never_fresh_or_the_meta_model_s(
    tmp_path, seed
):
    """The stem is module 0's checkpoint's, the head module K−1's, each stage its module's."""
    meta = trained_looking_meta("resnet14", SIGNAL)
    paths = []
    for i, hybrid in enumerate(_incubated(meta)):
        paths.append(tmp_path / f"{i}.pt")
        info = {"arch": "resnet14", "input_shape": list(SIGNAL), "num_classes": NUM_CLASSES}
        info |= {"data_hash": "h", **assembly_model_meta("incubate", model=hybrid, module=i)}
        save_model(paths[-1], hybrid, info)
    loaded = [load_assembly_model(p, role="incubate", target="resnet14")[0] for p in paths]
    fresh = seeded("resnet14", SIGNAL, seed=seed)  # the skeleton's own initialisation
    skeleton_init = copy.deepcopy(fresh)

    model = assemble(fresh, loaded)

    sources = {"stem": loaded[0].stem, "head": loaded[-1].head}
    sources |= {f"stages.{i}": loaded[i].stage for i in range(3)}
    inits = {"stem": skeleton_init.stem, "head": skeleton_init.head}
    inits |= {f"stages.{i}": skeleton_init.stages[i] for i in range(3)}
    metas = {"stem": meta.stem, "head": meta.head}
    covered = 0
    for prefix, source in sources.items():
        part = model.get_submodule(prefix)
        for key, value in _tensors(part).items():
            assert torch.equal(value, _tensors(source)[key]), (prefix, key)
            assert not torch.equal(value, _tensors(inits[prefix])[key]), (prefix, key)
            if prefix in metas:
                assert not torch.equal(value, _tensors(metas[prefix])[key]), (prefix, key)
            covered += 1
    assert covered == len(_tensors(model))  # nothing else is left in the model


def test_an_assembled_model_is_an_ordinary_zoo_model_file(tmp_path):
    meta = trained_looking_meta("resnet14", SIGNAL)
    model = assemble(seeded("resnet14", SIGNAL), _incubated(meta))
    meta_data = {"arch": "resnet14", "input_shape": list(SIGNAL), "num_classes": NUM_CLASSES}

    save_model(tmp_path / "dma.pt", model, {**meta_data, "data_hash": "h"})
    loaded, _ = load_model(tmp_path / "dma.pt")

    x = torch.randn(4, *SIGNAL)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_the_m2m_chain_takes_pair_0_s_stem_pair_k_1_s_head_and_drops_the_stitches():
    meta = trained_looking_meta("resnet14", SIGNAL)
    student = seeded("wrn_16_2", SIGNAL, seed=1)  # other widths than the meta model: stitches
    shapes = boundary_shapes(meta, SIGNAL), boundary_shapes(student, SIGNAL)
    pairs = [m2m_pair(meta, student, i, *shapes) for i in range(3)]
    for i, pair in enumerate(pairs):
        for part in pair.trained_parts():
            _perturbed(part, i)
    skeleton = seeded("wrn_16_2", SIGNAL, seed=2)

    model = assemble(skeleton, pairs)

    for part, source in (("stem", pairs[0].stem), ("head", pairs[-1].head)):
        for key, value in source.state_dict().items():
            assert torch.equal(getattr(model, part).state_dict()[key], value), (part, key)
    for stage, pair in zip(model.stages, pairs, strict=True):
        assert isinstance(pair.module.stitch_in, torch.nn.Identity) == (pair.index == 0)
        for key, value in pair.stage.state_dict().items():
            assert torch.equal(stage.state_dict()[key], value)
    assert not any("stitch" in k for k in model.state_dict())


def test_modules_without_the_stem_and_head_they_own_are_refused():
    meta = trained_looking_meta("resnet14", SIGNAL)
    hybrids = _incubated(meta)
    stemless = HybridModel(meta, 0, hybrids[0].module)  # module 0 without its stem
    headless = HybridModel(meta, 2, hybrids[2].module)

    for broken in ([stemless, *hybrids[1:]], [*hybrids[:2], headless]):
        with pytest.raises(KdflowError, match="module 0 must carry the trained stem"):
            assemble(seeded("resnet14", SIGNAL), broken)
    with pytest.raises(KdflowError, match="are modules \\[1, 0, 2\\], not 0..K−1 in order"):
        assemble(seeded("resnet14", SIGNAL), [hybrids[1], hybrids[0], hybrids[2]])


def test_modules_of_another_architecture_are_refused():
    deeper = _incubated(trained_looking_meta("resnet20", SIGNAL), "resnet20")

    with pytest.raises(KdflowError, match="the trained stage 0 does not fit ResNet"):
        assemble(seeded("resnet14", SIGNAL), deeper)
    with pytest.raises(KdflowError, match="cannot assemble 2 modules into ResNet with 3 stages"):
        assemble(seeded("resnet14", SIGNAL), deeper[:2])


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
    runs = (("meta@s0", 4.0), ("incubate@0-s0", 2.0), ("incubate@1-s0", 5.0))
    for stage, seconds in runs:
        record = {"stage": stage, "train_seconds": seconds}
        (tmp_path / RUNS_DIR / f"{stage}.json").write_text(json_text(record))

    totals = recorded_time_totals("meta@s0", ["incubate@0-s0", "incubate@1-s0"], 1.0)

    assert totals["train_seconds"] == 12.0 and totals["train_seconds_parallel"] == 10.0
    # A module restored from the DVC cache has no record: no totals rather than wrong ones.
    assert recorded_time_totals("meta@s0", ["incubate@0-s0", "incubate@2-s0"], 1.0) == {}
