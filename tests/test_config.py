"""params.yaml parsing: the repo's file is valid; each bad value is one actionable line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kdflow.config import Params, load_params, params_hash
from kdflow.data import SOURCES
from kdflow.errors import KdflowError

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def full_params() -> dict[str, Any]:
    """Return every section with every key: the repo's params.yaml over the model's defaults."""
    defaults = Params().model_dump(by_alias=True)
    return _merged(defaults, yaml.safe_load(REPO_PARAMS.read_text()))


def _set(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *parents, key = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[key] = value
    return raw


def _load_error(tmp_path: Path, raw: Any) -> str:
    """Return the one-line error of loading `raw`'s sections over the repo's other sections."""
    if isinstance(raw, dict):
        raw = {**yaml.safe_load(REPO_PARAMS.read_text()), **raw}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(KdflowError) as caught:
        load_params(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_repo_params_yaml_parses():
    params = load_params(REPO_PARAMS)

    raw = yaml.safe_load(REPO_PARAMS.read_text())
    assert params.data.source in SOURCES
    assert params.data.source == raw["data"]["source"]
    assert params.data.num_samples == raw["data"]["num_samples"]
    assert 0 < params.data.val_fraction < 1


def test_full_params_round_trip_through_the_model(tmp_path, full_params):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(full_params))

    assert load_params(path).model_dump(by_alias=True) == full_params


@pytest.mark.parametrize(
    ("key", "value", "fragments"),
    [
        ("teacher.optim.lr", -0.1, ["teacher.optim.lr = -0.1", "greater than 0"]),
        (
            "data.source",
            "svhn",
            ["data.source = 'svhn' is invalid: not a known data source; known: mnist1d, digits"],
        ),
        (
            "distill.teachers",
            ["mll", "tutor"],
            ["distill.teachers.1 = 'tutor' is invalid: not a known teacher; known: mll, mcmi"],
        ),
        (
            "distill.protocols",
            ["oneshot"],
            ["distill.protocols.0 = 'oneshot'", "not a known protocol; known: full, fewshot"],
        ),
        ("teacher.model", "resnet21", ["'resnet21' is not a known model; known: cnn3, mlp"]),
        ("data.val_fraction", 0, ["data.val_fraction = 0 ", "greater than 0"]),
        ("data.val_fraction", 1.5, ["data.val_fraction = 1.5 ", "less than 1"]),
        ("data.num_samples", 10, ["data.num_samples = 10 ", "greater than or equal to 100"]),
        ("mcmi.lambda", -1, ["mcmi.lambda = -1 ", "greater than or equal to 0"]),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(
    tmp_path, full_params, key, value, fragments
):
    message = _load_error(tmp_path, _set(full_params, key, value))

    assert message.startswith("params: ")
    for fragment in fragments:
        assert fragment in message


def test_typo_key_suggests_the_real_one(tmp_path, full_params):
    raw = _set(full_params, "data.sed", 3)

    message = _load_error(tmp_path, raw)

    assert "unknown key 'data.sed'" in message
    assert "did you mean 'data.seed'?" in message
    assert "allowed keys here: source, path, seed" in message


def test_typo_section_suggests_the_real_one(tmp_path, full_params):
    full_params["teachr"] = full_params.pop("teacher")

    assert "did you mean 'teacher'?" in _load_error(tmp_path, full_params)


@pytest.mark.parametrize("source", ["cifar10", "cifar100", "imagefolder"])
def test_local_source_without_path_says_to_set_data_path(tmp_path, full_params, source):
    raw = _set(_set(full_params, "data.source", source), "data.path", None)

    message = _load_error(tmp_path, raw)

    assert f"data.source {source!r} needs data.path" in message


def test_milestones_outside_epochs_name_the_bad_milestone(tmp_path, full_params):
    optim = full_params["teacher"]["optim"]
    optim.update(epochs=30, schedule="multistep", milestones=[10, 30, 45])

    message = _load_error(tmp_path, full_params)

    assert message.startswith("params: teacher.optim: ")
    assert "milestones [30, 45] must lie in (0, epochs=30)" in message


def test_partial_section_names_the_missing_key(tmp_path):
    message = _load_error(tmp_path, {"teacher": {"optim": {"lr": 0.1}}})

    assert "missing key 'teacher.optim.epochs'" in message


@pytest.mark.parametrize("text", ["- data\n- teacher\n", "just a string\n", "42\n"])
def test_non_mapping_yaml_is_refused(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)

    with pytest.raises(KdflowError, match="expected a mapping of sections at the top level"):
        load_params(path)


def test_invalid_yaml_is_one_line_with_its_position(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: [mnist1d\n  seed: 0\n")

    with pytest.raises(KdflowError) as caught:
        load_params(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: not valid YAML at line 3, column 7: ")
    assert "\n" not in message


def test_a_key_written_twice_is_refused_as_dvc_refuses_it(tmp_path):
    text = REPO_PARAMS.read_text().replace("  seed: 0\n", "  seed: 0\n  seed: 1\n", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    line = text.splitlines().index("  seed: 1") + 1

    with pytest.raises(KdflowError) as caught:
        load_params(path)

    assert str(caught.value) == (
        f"{path}: line {line}, column 3: key 'seed' is written twice (first on line "
        f"{line - 1}); DVC refuses such a file: keep one"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# nothing set\n", "is empty; copy the repository's params.yaml"),
        (None, "section 'assembly' is missing; every stage reads it"),
        ("assembly:\n", "section 'assembly' is empty or not a mapping"),
    ],
)
def test_an_empty_file_or_section_is_an_error_not_the_defaults(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    repo_text = REPO_PARAMS.read_text()
    without_assembly = repo_text[: repo_text.index("\nassembly:")] + "\n"
    path.write_text(
        without_assembly
        if text is None
        else (text if text.startswith("#") else without_assembly + text)
    )

    with pytest.raises(KdflowError, match=expected):
        load_params(path)


def test_a_folder_given_as_params_file_says_what_it_is(tmp_path):
    with pytest.raises(KdflowError, match="is a folder; pass a YAML file"):
        load_params(tmp_path)


def test_missing_file_says_where_to_run(tmp_path):
    missing = tmp_path / "nope.yaml"

    with pytest.raises(KdflowError) as caught:
        load_params(missing)

    assert str(missing) in str(caught.value)
    assert "not found" in str(caught.value)


def test_params_hash_is_stable_and_sensitive(full_params):
    params = Params.model_validate(full_params)
    changed = Params.model_validate(_set(copy.deepcopy(full_params), "data.seed", 7))

    assert params_hash(params) == params_hash(Params.model_validate(full_params))
    assert len(params_hash(params)) == 16
    assert params_hash(params) != params_hash(changed)
    assert params_hash(params.data) == params_hash(params.data.model_dump(by_alias=True))
