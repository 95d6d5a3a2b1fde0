"""m2mKD pairs: the loss, what trains, and the boundary checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdflow.assembly import (
    M2MObjective,
    boundary_shapes,
    check_m2m_boundaries,
    incubation_model,
    m2m_loss_terms,
    m2m_pair,
)
from kdflow.errors import KdflowError
from tests.assembly.conftest import NUM_CLASSES, seeded, trained_looking_meta

SIGNAL = (1, 16)


def _direct_m2m_loss(student, teacher, labels, alpha, tau):
    """The pair loss written out: (1 − α)·CE + α·τ²·(1/B)Σ_i Σ_c p_t (log p_t − log p_s)."""
    log_p_student = torch.log(torch.softmax(student.double() / tau, dim=1))
    p_teacher = torch.softmax(teacher.double() / tau, dim=1)
    kl = (p_teacher * (torch.log(p_teacher) - log_p_student)).sum(dim=1).mean()
    ce = -torch.log(torch.softmax(student.double(), dim=1))[torch.arange(len(labels)), labels]
    return (1 - alpha) * ce.mean() + alpha * tau**2 * kl


@pytest.mark.parametrize(("alpha", "tau"), [(0.5, 1.0), (0.3, 4.0), (1.0, 2.0), (0.0, 1.0)])
def test_loss_matches_the_formula(alpha, tau):
    generator = torch.Generator().manual_seed(0)
    student = 3 * torch.randn(32, NUM_CLASSES, generator=generator)
    teacher = 3 * torch.randn(32, NUM_CLASSES, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (32,), generator=generator)

    terms = m2m_loss_terms(student, teacher, labels, alpha, tau)

    assert set(terms) == {"ce", "kd"}
    total = terms["ce"] + terms["kd"]
    assert float(total) == pytest.approx(
        float(_direct_m2m_loss(student, teacher, labels, alpha, tau)), abs=1e-5
    )
    assert float(terms["ce"]) == pytest.approx(
        (1 - alpha) * float(F.cross_entropy(student, labels)), abs=1e-5
    )


def test_loss_is_ce_alone_when_student_equals_teacher():
    logits = torch.randn(8, NUM_CLASSES)
    labels = torch.arange(8) % NUM_CLASSES

    terms = m2m_loss_terms(logits, logits.clone(), labels, 0.5, 1.0)

    assert float(terms["kd"]) == pytest.approx(0.0, abs=1e-7)


def _pair(student_name: str, index: int):
    meta = trained_looking_meta("resnet14", SIGNAL)
    teacher = seeded("resnet8", SIGNAL, seed=2)
    student = seeded(student_name, SIGNAL, seed=3)
    meta_shapes, student_shapes = boundary_shapes(meta, SIGNAL), boundary_shapes(student, SIGNAL)
    pair = m2m_pair(meta, student, index, meta_shapes, student_shapes)
    return pair, incubation_model(meta, teacher, index)


@pytest.mark.parametrize(
    ("student_name", "index"),
    [("wrn_16_2", 0), ("wrn_16_2", 1), ("wrn_16_2", 2), ("resnet8x4", 1), ("wrn_16_1", 1)],
)
def test_objective_trains_student_module_its_stitches_and_owned_stem_or_head_only(
    student_name, index
):
    pair, teacher_path = _pair(student_name, index)
    objective = M2MObjective(teacher_path, alpha=0.5, temperature=1.0)
    x, y = torch.randn(6, *SIGNAL), torch.arange(6) % NUM_CLASSES
    pair.train()

    logits, terms = objective(pair, x, y, torch.arange(6), 0)
    (terms["ce"] + terms["kd"]).backward()

    assert logits.shape == (6, NUM_CLASSES)
    with_grad = {name for name, p in pair.named_parameters() if p.grad is not None}
    owned = tuple(pair.trained_names())
    assert owned == (("stem.",) * (index == 0) + (f"stages.{index}.",) + ("head.",) * (index == 2))
    trainable = {name for name, p in pair.named_parameters() if name.startswith(owned)}
    assert with_grad == trainable
    stage_parts = {n.split(".")[2] for n in trainable if n.startswith("stages.")}
    # A stitch only where the student's module meets a meta layer of another width: none
    # before module 0 nor after module K−1, none at all for wrn_16_1 (the meta's widths).
    stitches = {"stitch_in"} if index > 0 else set()
    stitches |= {"stitch_out"} if index < 2 else set()
    if student_name == "wrn_16_1":
        stitches = set()
    assert stage_parts == {"module"} | stitches
    assert all(p.grad is None for p in teacher_path.parameters())
    assert not teacher_path.training


@pytest.mark.parametrize("index", [0, 1, 2])
def test_objective_uses_the_teacher_module_inside_the_meta_model(index):
    pair, teacher_path = _pair("wrn_16_2", index)
    objective = M2MObjective(teacher_path, alpha=1.0, temperature=1.0)
    x, y = torch.randn(6, *SIGNAL), torch.arange(6) % NUM_CLASSES
    pair.eval()  # the frozen meta parts are in eval mode in training too

    student_logits, terms = objective(pair, x, y, torch.arange(6), 0)

    with torch.no_grad():
        assert torch.equal(student_logits, pair(x))
        teacher_logits = teacher_path(x)  # pair 0: the teacher's stem; pair K−1: its head
    expected = m2m_loss_terms(student_logits.detach(), teacher_logits, y, 1.0, 1.0)["kd"]
    assert float(terms["kd"].detach()) == pytest.approx(float(expected), abs=1e-6)
    assert teacher_path.owns_stem == (index == 0) and teacher_path.owns_head == (index == 2)


def _shapes(name: str, input_shape=SIGNAL):
    return boundary_shapes(seeded(name, input_shape), input_shape)


def test_compatible_boundaries_pass():
    meta = _shapes("resnet14")
    for student in ("wrn_16_1", "wrn_16_2", "resnet8x4", "resnet20"):
        check_m2m_boundaries(
            meta,
            _shapes("resnet8"),
            _shapes(student),
            target="resnet14",
            teacher_arch="resnet8",
            student_arch=student,
        )


def test_a_meta_model_of_other_widths_than_the_teacher_is_refused():
    with pytest.raises(KdflowError) as error:
        check_m2m_boundaries(
            _shapes("resnet8x4"),
            _shapes("resnet8"),
            _shapes("wrn_16_1"),
            target="resnet8x4",
            teacher_arch="resnet8",
            student_arch="wrn_16_1",
        )
    assert str(error.value) == (
        "m2m: the teacher resnet8 (16×16 → 16×16 → 32×8 → 64×4) and the meta model of "
        "assembly.target resnet8x4 (32×16 → 64×16 → 128×8 → 256×4) differ at a module "
        "boundary; set assembly.target to a model with the teacher's stage widths and strides"
    )


@pytest.mark.parametrize(
    ("student", "input_shape"), [("cnn3", SIGNAL), ("cnn3", (3, 16, 16)), ("mlp", SIGNAL)]
)
def test_a_student_with_other_strides_is_refused(student, input_shape):
    with pytest.raises(
        KdflowError, match=f"m2m: assembly.student {student} .* differ in spatial size at boundary"
    ):
        check_m2m_boundaries(
            _shapes("resnet14", input_shape),
            _shapes("resnet8", input_shape),
            _shapes(student, input_shape),
            target="resnet14",
            teacher_arch="resnet8",
            student_arch=student,
        )


def test_a_different_number_of_modules_is_refused():
    with pytest.raises(KdflowError, match="vgg8 5; they must split into the same number"):
        check_m2m_boundaries(
            _shapes("resnet14"),
            _shapes("resnet8"),
            _shapes("vgg8"),
            target="resnet14",
            teacher_arch="resnet8",
            student_arch="vgg8",
        )
