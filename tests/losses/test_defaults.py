"""Published defaults (read from docs/algorithms.md), declared ranges, and the "+ KD" label."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from kdflow.errors import KdflowError
from kdflow.losses import METHODS, build_method, method_label
from kdflow.losses.base import COUNT, MOMENTUM, POSITIVE, WEIGHT, DistillMethod, Range
from tests.losses.conftest import LAYOUTS, NUM_TRAIN, TRAIN_LABELS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "algorithms.md"
ALL_METHODS = METHODS.names()
FEATURE_METHODS = ["fitnet", "at", "sp", "rkd", "pkt", "crd"]


def published_defaults() -> dict[str, dict[str, float]]:
    """Return {method: defaults} parsed from the table under "Published defaults"."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("### Published defaults", 1)[1].split("\n### ", 1)[0]
    table: dict[str, dict[str, float]] = {}
    for line in section.splitlines():
        match = re.match(r"\| `(\w+)` \|[^|]*\| ([^|]*) \|", line)
        if match is None:
            continue
        cell = match.group(2).strip()
        pairs = [] if cell == "—" else cell.strip("`").split(", ")
        table[match.group(1)] = {
            key: float(value) for key, value in (pair.split("=") for pair in pairs)
        }
    return table


def build(name: str, **overrides: float) -> DistillMethod:
    student, teacher = LAYOUTS["2d"]
    needs_teacher = METHODS.get(name).needs_teacher
    return build_method(
        name,
        student,
        teacher if needs_teacher else None,
        NUM_TRAIN,
        train_labels=TRAIN_LABELS,
        **overrides,
    )


def test_docs_table_lists_every_method() -> None:
    assert sorted(published_defaults()) == sorted(ALL_METHODS)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_defaults_are_the_published_ones(name: str) -> None:
    assert METHODS.get(name).defaults == published_defaults()[name]


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_feature_methods_are_ce_plus_their_term_without_kd(name: str, batch_factory) -> None:
    method = build(name)
    assert (method.hparams["gamma"], method.hparams["alpha"]) == (1.0, 0.0)
    terms = method(batch_factory(*LAYOUTS["2d"], dtype=torch.float32))
    assert terms.keys() == {"ce", method.term}  # no "kd" column at all


@pytest.mark.parametrize("name", ALL_METHODS)
def test_label_names_the_kd_variant_exactly_when_a_kd_term_is_trained(
    name: str, batch_factory
) -> None:
    method_class = METHODS.get(name)
    variants: list[dict[str, float]] = [{}]
    if "alpha" in method_class.defaults:
        variants += [{"gamma": 0.1, "alpha": 0.9}, {"alpha": 0.0}]
    for overrides in variants:
        method = build(name, **overrides)
        student, teacher = LAYOUTS["2d"]
        batch = batch_factory(
            student,
            teacher if method.needs_teacher else None,
            num_students=method.num_students,
            dtype=torch.float32,
        )
        has_kd = "kd" in method(batch)
        label = method_label(name, overrides)
        if name == "kd":  # KD is the method itself, whatever its weights
            assert label == "kd"
        else:
            assert label == (f"{name} + KD" if has_kd else name), overrides


def test_label_needs_no_torch_and_ignores_other_overrides() -> None:
    assert method_label("pkt", {"beta": 1000}) == "pkt"
    assert method_label("crd", {"alpha": 1}) == "crd + KD"
    assert method_label("dkd", {"warmup": 1}) == "dkd"


def outside(allowed: Range) -> list[float]:
    """Return values just outside `allowed`."""
    values = []
    if math.isfinite(allowed.low):
        values.append(allowed.low if allowed.low_open else allowed.low - 1)
        if allowed.integer:
            values.append(allowed.low + 0.5)
    if math.isfinite(allowed.high):
        values.append(allowed.high if allowed.high_open else allowed.high + 1)
    return values


def test_every_method_declares_a_range_for_every_default() -> None:
    for name in ALL_METHODS:
        method_class = METHODS.get(name)
        assert method_class.ranges.keys() == method_class.defaults.keys(), name
        for key, allowed in method_class.ranges.items():
            assert method_class.defaults[key] in allowed, (name, key)
            assert outside(allowed), (name, key)  # every range excludes something


CASES = [
    (name, key, value)
    for name in ALL_METHODS
    for key, allowed in METHODS.get(name).ranges.items()
    for value in outside(allowed)
]


@pytest.mark.parametrize(("name", "key", "value"), CASES)
def test_out_of_range_override_names_method_key_value_and_range(
    name: str, key: str, value: float
) -> None:
    with pytest.raises(KdflowError) as error:
        build(name, **{key: value})
    message = str(error.value)
    allowed = METHODS.get(name).ranges[key].describe()
    assert "\n" not in message
    assert message == (
        f"{name}: hyper-parameter {key} = {float(value)!r} is out of range; allowed: {allowed}"
    )


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("kd", {"gamma": 0, "alpha": 0}),
        ("dkd", {"warmup": 0}),
        ("crd", {"momentum": 0, "nce_k": 1, "feat_dim": 1, "seed": 0}),
        ("rkd", {"distance_weight": 0, "angle_weight": 0}),
    ],
)
def test_range_ends_that_are_allowed_build(name: str, overrides: dict[str, float]) -> None:
    assert (
        build(name, **overrides).hparams.items()
        >= {k: float(v) for k, v in overrides.items()}.items()
    )


def test_ranges_describe_themselves() -> None:
    assert WEIGHT.describe() == "≥ 0"
    assert POSITIVE.describe() == "> 0"
    assert MOMENTUM.describe() == "in [0, 1)"
    assert COUNT.describe() == "an integer ≥ 1"
    assert Range(high=2.0).describe() == "≤ 2"
    assert 0.5 not in COUNT and 2.0 in COUNT and math.nan not in WEIGHT and True not in WEIGHT


def test_a_method_without_ranges_for_its_defaults_fails_on_definition() -> None:
    with pytest.raises(TypeError, match="without a range: \\['beta'\\]"):

        class Unchecked(DistillMethod):  # noqa: F841 (defined for the error only)
            defaults: ClassVar[dict[str, float]] = {"beta": 1.0}
