"""params.yaml and the config models agree: every key in both, every default equal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kdflow.config import Params, load_params, trace_params

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _differences(model: Any, written: Any, path: str = "") -> list[str]:
    if isinstance(model, dict) and isinstance(written, dict):
        found = []
        for key in sorted(set(model) | set(written), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in written:
                found.append(f"{where}: in the config models, missing from params.yaml")
            elif key not in model:
                found.append(f"{where}: in params.yaml, unknown to the config models")
            else:
                found += _differences(model[key], written[key], where)
        return found
    return [] if model == written else [f"{path}: config {model!r} != params.yaml {written!r}"]


def test_params_yaml_holds_every_key_with_the_config_default() -> None:
    defaults = Params().model_dump(by_alias=True)
    written = yaml.safe_load(REPO_PARAMS.read_text())
    assert _differences(defaults, written) == []


def test_every_method_has_a_method_params_entry() -> None:
    # A student stage declares `distill.method_params.<method>`; DVC refuses a missing key.
    from kdflow.losses import METHODS

    written = yaml.safe_load(REPO_PARAMS.read_text())["distill"]["method_params"]
    assert sorted(written) == sorted(m for m in METHODS.names() if m != "none")


def test_trace_records_leaf_reads_and_whole_sections() -> None:
    with trace_params() as trace:
        params = load_params(REPO_PARAMS)
        assert params.distill.optim.lr == 0.05
        params.mcmi.lam  # noqa: B018  (a read is what is traced)
        params.runtime.model_dump()
        params.assembly.model_dump(include={"target"})
        params.distill.method_settings("dkd")
    assert trace.keys == {
        "distill.optim.lr",
        "mcmi.lambda",
        "runtime",
        "assembly.target",
        "distill.method_params.dkd",
    }
    # Outside the block nothing is recorded, and params loaded there are not traced.
    load_params(REPO_PARAMS).teacher.model  # noqa: B018
    assert "teacher.model" not in trace.keys


def test_each_protocol_has_its_own_params_section() -> None:
    from kdflow.config import ProtocolParams
    from kdflow.train.grid import PROTOCOLS

    assert list(ProtocolParams.model_fields) == list(PROTOCOLS)
