"""Paper presets: every file validates, and `kdflow preset` output applied by DVC's own `-S`
parser yields exactly params.yaml with the preset merged in."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from kdflow.config import parse_params
from tests.helpers import merge_params

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "presets").glob("*.yaml"))
STACKS = [
    ["cifar100-mcmi.yaml"],
    ["cifar100-mcmi.yaml", "cifar100-resnet56-resnet20.yaml"],
    ["cifar100-mcmi.yaml", "cifar10-zeroshot.yaml"],
]


def _kdflow_preset(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "kdflow"), "preset", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_presets_exist():
    assert {p.name for p in PRESETS} >= {name for stack in STACKS for name in stack}


@pytest.mark.parametrize("stack", STACKS, ids=lambda s: "+".join(s))
def test_dvc_applies_the_overrides_to_the_merged_params(stack: list[str], tmp_path: Path):
    params = tmp_path / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", params)
    expected = yaml.safe_load(params.read_text())
    for name in stack:
        merge_params(expected, yaml.safe_load((REPO / "presets" / name).read_text()))

    done = _kdflow_preset(*(f"presets/{name}" for name in stack))
    assert done.returncode == 0, done.stderr
    tokens = done.stdout.split()  # as `dvc exp run $(kdflow preset …)` splits them
    assert tokens[0::2] == ["-S"] * (len(tokens) // 2)
    apply_overrides(params, tokens[1::2])

    assert yaml.safe_load(params.read_text()) == expected
    parse_params(copy.deepcopy(expected))


def test_published_protocol_is_spelled_out():
    merged = yaml.safe_load((REPO / "params.yaml").read_text())
    merge_params(merged, yaml.safe_load((REPO / "presets/cifar100-mcmi.yaml").read_text()))
    params = parse_params(merged)

    assert (params.teacher.model, params.distill.student) == ("resnet32x4", "resnet8x4")
    for optim in (params.teacher.optim, params.distill.optim):
        assert (optim.epochs, optim.batch_size, optim.lr) == (240, 64, 0.05)
        assert (optim.milestones, optim.lr_decay, optim.weight_decay) == (
            [150, 180, 210],
            0.1,
            5e-4,
        )
    assert params.mcmi.optim.epochs == 20
    assert params.data.augment == "crop_flip"
    assert params.distill.method_params["dkd"]["beta_dkd"] == 8.0


def test_a_bad_preset_fails_with_one_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill:\n  methods: [kd, foo]\n")

    done = _kdflow_preset(str(bad))

    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "'foo'" in lines[0] and "known:" in lines[0]


def test_a_missing_preset_names_the_folder(tmp_path: Path):
    done = _kdflow_preset(str(tmp_path / "nope.yaml"))

    assert done.returncode == 2
    assert "not found; the presets live in presets/" in done.stderr
