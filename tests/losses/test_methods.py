"""Properties every registered distillation method must have (docs/algorithms.md)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from kdflow.errors import KdflowError
from kdflow.losses import METHODS, DistillBatch, DistillMethod, OutputShapes, build_method
from kdflow.models.base import ModelOutput
from tests.losses.conftest import NUM_TRAIN, TRAIN_LABELS

ALL_METHODS = METHODS.names()


def build(
    name: str, layout: tuple[OutputShapes, OutputShapes], **overrides: float
) -> DistillMethod:
    """Return method `name` for the layout, without a teacher when it needs none."""
    student, teacher = layout
    method_class = METHODS.get(name)
    return build_method(
        name,
        student,
        teacher if method_class.needs_teacher else None,
        NUM_TRAIN,
        train_labels=TRAIN_LABELS,
        **overrides,
    )


def batch_for(
    method: DistillMethod,
    layout: tuple[OutputShapes, OutputShapes],
    factory: Callable[..., DistillBatch],
    **kwargs: object,
) -> DistillBatch:
    """Return a random batch with as many students, and a teacher, as `method` asks for."""
    student, teacher = layout
    return factory(
        student,
        teacher if method.needs_teacher else None,
        num_students=method.num_students,
        **kwargs,
    )


def permute_output(output: ModelOutput, order: torch.Tensor) -> ModelOutput:
    """Return `output` with its samples reordered."""
    return ModelOutput(
        logits=output.logits[order],
        features=[f[order] for f in output.features],
        embedding=output.embedding[order],
    )


def test_registry_holds_every_method() -> None:
    expected = {"none", "kd", "dkd", "fitnet", "at", "sp", "rkd", "pkt", "crd", "dml"}
    assert expected <= set(ALL_METHODS)


def test_unknown_method_lists_known_ones() -> None:
    shapes = OutputShapes(features=[(4, 4)], embedding_dim=4, num_classes=3)
    with pytest.raises(KdflowError, match="'foo'") as error:
        build_method("foo", shapes, shapes, NUM_TRAIN)
    for name in ALL_METHODS:
        assert name in str(error.value)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_unknown_override_names_key_and_allowed_keys(name: str, layout) -> None:
    student, teacher = layout
    with pytest.raises(KdflowError, match="'bogus'") as error:
        build_method(name, student, teacher, NUM_TRAIN, bogus=1.0)
    for key in METHODS.get(name).defaults:
        assert key in str(error.value)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_defaults_are_accepted_as_overrides(name: str, layout) -> None:
    student, teacher = layout
    defaults = METHODS.get(name).defaults
    method = build_method(name, student, teacher, NUM_TRAIN, train_labels=TRAIN_LABELS, **defaults)
    assert method.hparams == defaults


def test_override_replaces_default_and_must_be_a_number() -> None:
    shapes = OutputShapes(features=[(4, 4)], embedding_dim=4, num_classes=3)
    assert build_method("kd", shapes, shapes, NUM_TRAIN, temperature=2).hparams["temperature"] == 2
    with pytest.raises(KdflowError, match="temperature"):
        build_method("kd", shapes, shapes, NUM_TRAIN, temperature="hot")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [n for n in ALL_METHODS if METHODS.get(n).needs_teacher])
def test_teacher_methods_refuse_a_missing_teacher(name: str, layout) -> None:
    with pytest.raises(KdflowError, match="teacher"):
        build_method(name, layout[0], None, NUM_TRAIN)


def test_output_shapes_are_measured_without_the_batch_dimension() -> None:
    output = ModelOutput(
        logits=torch.zeros(5, 3),
        features=[torch.zeros(5, 4, 7), torch.zeros(5, 8, 2, 2)],
        embedding=torch.zeros(5, 8),
    )
    shapes = OutputShapes.measure(output)
    assert shapes == OutputShapes(features=[(4, 7), (8, 2, 2)], embedding_dim=8, num_classes=3)


@pytest.mark.parametrize("batch_size", [1, 2, 8])
@pytest.mark.parametrize("name", ALL_METHODS)
def test_terms_and_gradients_are_finite(name: str, batch_size: int, layout, batch_factory) -> None:
    method = build(name, layout)
    batch = batch_for(method, layout, batch_factory, batch_size=batch_size, dtype=torch.float32)
    terms = method(batch)
    assert terms and all(value.dim() == 0 and torch.isfinite(value) for value in terms.values())
    sum(terms.values()).backward()
    student = batch.students[0]
    leaves = [student.logits, student.embedding, *student.features]
    gradients = [leaf.grad for leaf in leaves if leaf.grad is not None]
    gradients += [p.grad for p in method.parameters()]
    assert student.logits.grad is not None
    if method.needs_features:
        assert len(gradients) > 1 + len(list(method.parameters()))
    assert all(g is not None and torch.isfinite(g).all() for g in gradients)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_trainable_extras_receive_gradients(name: str, layout, batch_factory) -> None:
    method = build(name, layout)
    batch = batch_for(method, layout, batch_factory, dtype=torch.float32)
    sum(method(batch).values()).backward()
    for parameter_name, parameter in method.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0


@pytest.mark.parametrize("name", [n for n in ALL_METHODS if not METHODS.get(n).needs_indices])
def test_invariant_to_batch_order(name: str, layout, batch_factory) -> None:
    method = build(name, layout).double()
    batch = batch_for(method, layout, batch_factory, batch_size=7)
    order = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    permuted = DistillBatch(
        students=[permute_output(s, order) for s in batch.students],
        teacher=None if batch.teacher is None else permute_output(batch.teacher, order),
        labels=batch.labels[order],
        indices=None if batch.indices is None else batch.indices[order],
        epoch=batch.epoch,
        total_epochs=batch.total_epochs,
    )
    expected, actual = method(batch), method(permuted)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-9, atol=1e-9)
