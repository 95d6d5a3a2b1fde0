"""The `assembly` params section: validation and the computed end-to-end epoch budgets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kdflow.config import AssemblyParams, parse_params
from kdflow.errors import KdflowError

REPO = Path(__file__).resolve().parents[2]


def _assembly(**override) -> AssemblyParams:
    return parse_params({"assembly": override}).assembly


def test_params_yaml_holds_the_defaults():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert parse_params(raw).assembly == AssemblyParams()


def test_baseline_epochs_follow_their_modular_counterparts():
    cfg = _assembly(
        modules=[0, 1, 2],
        meta={"epochs": 4, "batch_size": 32, "lr": 0.1},
        incubate={"epochs": 3, "batch_size": 32, "lr": 0.1},
        finetune={"epochs": 2, "batch_size": 32, "lr": 0.01},
        m2m={"epochs": 5, "batch_size": 32, "lr": 0.1},
        m2m_finetune={"epochs": 6, "batch_size": 32, "lr": 0.01},
        e2e={"batch_size": 16, "lr": 0.2, "schedule": "constant"},
    )

    dma, m2m = cfg.dma_e2e_optim(), cfg.m2m_e2e_optim()

    assert dma.epochs == 4 + 3 * 3 + 2
    assert m2m.epochs == 3 * 5 + 6
    for optim in (dma, m2m):
        assert (optim.batch_size, optim.lr, optim.schedule) == (16, 0.2, "constant")


def test_every_assembly_stage_runs_for_three_seeds_by_default():
    assert AssemblyParams().seeds == [0, 1, 2]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"modules": [0, 2]},
            "params: assembly: assembly.modules [0, 2] must list the module indices 0, 1, …, "
            "K−1 in order, with K ≥ 2",
        ),
        ({"modules": [0]}, "must list the module indices"),
        ({"seeds": []}, "assembly.seeds [] must list one or more distinct seeds ≥ 0"),
        ({"seeds": [0, 0]}, "assembly.seeds [0, 0] must list one or more distinct seeds"),
        ({"seeds": [-1]}, "assembly.seeds [-1] must list"),
        ({"seed": 0}, "unknown key 'assembly.seed' (did you mean 'assembly.seeds'?)"),
        ({"target": "resnet15"}, "assembly.target 'resnet15' is not a known model"),
        ({"alpha": 1.5}, "params: assembly.alpha = 1.5 is invalid"),
        ({"e2e": {"batch_size": 8, "lr": 0.1, "epochs": 3}}, "unknown key 'assembly.e2e.epochs'"),
        ({"e2e": {"batch_size": 8, "lr": 0.1, "schedule": "multistep"}}, "assembly.e2e.schedule"),
        (
            {"incubation": {}},
            "unknown key 'assembly.incubation' (did you mean 'assembly.incubate'?)",
        ),
    ],
)
def test_bad_assembly_params_are_one_line_errors(override, message):
    with pytest.raises(KdflowError) as error:
        parse_params({"assembly": override})
    assert message in str(error.value)
    assert "\n" not in str(error.value)
