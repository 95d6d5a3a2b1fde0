"""Student training pieces: the teacher-output cache, the distillation objective, peer groups."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from kdflow.losses import OutputShapes, build_method
from kdflow.models import build_model
from kdflow.models.base import KDModel, ModelOutput
from kdflow.train.distill import (
    DistillObjective,
    PeerGroup,
    TeacherCache,
    build_objective,
    subset_hash,
    teacher_outputs,
    without_classes,
)
from kdflow.train.trainer import fit

INPUT_SHAPE = (1, 16)  # the blobs and new_model fixtures of tests/train/conftest.py
NUM_CLASSES = 4


def make_teacher(arch: str = "mlp", seed: int = 7) -> KDModel:
    """Return a fresh model in eval mode, standing in for a trained teacher."""
    torch.manual_seed(seed)
    return build_model(arch, INPUT_SHAPE, NUM_CLASSES).eval()


def shapes(model: KDModel, x: torch.Tensor) -> OutputShapes:
    was_training = model.training
    with torch.no_grad():
        measured = OutputShapes.measure(model.eval().forward_features(x[:2]))
    model.train(was_training)
    return measured


def assert_outputs_equal(got: ModelOutput, want: ModelOutput) -> None:
    assert torch.equal(got.logits, want.logits)
    assert len(got.features) == len(want.features)
    for got_feature, want_feature in zip(got.features, want.features, strict=True):
        assert torch.equal(got_feature, want_feature)
    assert torch.equal(got.embedding, want.embedding)


def shuffled_batch(n: int, size: int = 64, seed: int = 3) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size]


@pytest.mark.parametrize("arch", ["mlp", "cnn3"])
@pytest.mark.parametrize("features", [True, False])
def test_teacher_cache_lookup_equals_live_teacher_outputs(blobs, arch, features):
    train, _ = blobs
    teacher = make_teacher(arch)
    # 256 samples in chunks of 100: the looked-up rows come from all three chunks.
    cache = TeacherCache(teacher, train.x, features, batch_size=100)
    index = shuffled_batch(len(train))

    cached = cache.lookup(index)
    live = teacher_outputs(teacher, train.x[index], features)

    assert_outputs_equal(cached, live)
    assert cached.logits.shape == (64, NUM_CLASSES)
    assert len(cached.features) == (3 if features else 0)
    assert cached.embedding.shape[0] == (64 if features else 0)


@pytest.mark.parametrize("method_name", ["kd", "fitnet"])
def test_objective_with_a_cache_gives_the_live_teachers_loss_terms(blobs, new_model, method_name):
    train, _ = blobs
    teacher, student = make_teacher(), new_model(0)
    method = build_method(
        method_name, shapes(student, train.x), shapes(teacher, train.x), len(train)
    )
    cache = TeacherCache(teacher, train.x, method.needs_features)
    cached = DistillObjective(method, teacher, total_epochs=2, cache=cache)
    live = DistillObjective(method, teacher, total_epochs=2)
    index = shuffled_batch(len(train))
    x, y = train.x[index], train.y[index]

    cached_logits, cached_terms = cached(student, x, y, index, 0)
    live_logits, live_terms = live(student, x, y, index, 0)

    assert torch.equal(cached_logits, live_logits)
    # FitNet alone has no KD term (α = 0, as published).
    expected = {"ce", "kd"} if method_name == "kd" else {"ce", "fitnet"}
    assert cached_terms.keys() == live_terms.keys() == expected
    for name, term in live_terms.items():
        assert torch.equal(cached_terms[name], term), name
        assert term.item() > 0, name
    if method_name != "kd":
        return
    # The kd term is α·T²·KL(p_t ‖ p_s) on the teacher's own logits.
    temperature = method.hparams["temperature"]
    with torch.no_grad():
        teacher_logits = teacher(x)
    kl = F.kl_div(
        F.log_softmax(live_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    expected_kd = method.hparams["alpha"] * temperature**2 * kl
    torch.testing.assert_close(live_terms["kd"], expected_kd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("use_cache", [False, True])
@pytest.mark.parametrize("method_name", ["kd", "fitnet"])
def test_teacher_gets_no_gradient_and_stays_unchanged(blobs, new_model, method_name, use_cache):
    train, _ = blobs
    teacher, student = make_teacher(), new_model(0)
    teacher.train()  # the objective, not its caller, must put the teacher in eval mode
    teacher_before = copy.deepcopy(teacher.state_dict())
    method = build_method(
        method_name, shapes(student, train.x), shapes(teacher, train.x), len(train)
    )
    objective = DistillObjective(method, teacher, total_epochs=2)
    if use_cache:
        objective.cache = TeacherCache(teacher, train.x, method.needs_features)
    index = shuffled_batch(len(train))

    out = teacher_outputs(teacher, train.x[index], features=True)
    _, terms = objective(student, train.x[index], train.y[index], index, 0)
    torch.stack(list(terms.values())).sum().backward()

    assert not teacher.training
    for tensor in (out.logits, *out.features, out.embedding):
        assert not tensor.requires_grad and tensor.grad_fn is None
        assert not tensor.is_inference()  # a student's backward may save it
    assert all(p.grad is None for p in teacher.parameters())
    for name, tensor in teacher.state_dict().items():  # BatchNorm running stats included
        assert torch.equal(tensor, teacher_before[name]), name
    student_grads = [p.grad for p in student.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in student_grads)
    if method_name == "fitnet":
        assert all(p.grad is not None for p in method.parameters())  # the regressor trains


def test_fit_with_dml_trains_both_peers(blobs, new_model, make_config):
    train, val = blobs
    group = PeerGroup([new_model(0), new_model(1)])
    method = build_method("dml", shapes(group.peers[0], train.x), None, len(train))
    assert method.num_students == len(group.peers)
    before = copy.deepcopy(group.state_dict())
    # No weight decay: a parameter moves only if the loss gives it a gradient.
    cfg = make_config(epochs=2, weight_decay=0.0)

    result = fit(
        group,
        DistillObjective(method, None, total_epochs=2),
        train,
        val,
        cfg,
        num_classes=NUM_CLASSES,
        extra=method,
    )

    for k in range(2):
        for name, param in group.peers[k].named_parameters():
            assert not torch.equal(param, before[f"peers.{k}.{name}"]), f"peer {k}: {name}"
    assert len(result.history) == 2
    for row in result.history:
        assert row["train_dml"] > 0
        assert row["train_loss"] == pytest.approx(row["train_ce"] + row["train_dml"], rel=1e-5)
    assert result.best_state.keys() == group.state_dict().keys()
    # The group is evaluated through its first peer.
    torch.testing.assert_close(group(val.x), group.peers[0](val.x))


def test_objective_passes_the_batch_indices_to_crd(blobs, new_model):
    train, _ = blobs
    teacher, student = make_teacher(), new_model(0)
    method = build_method(
        "crd",
        shapes(student, train.x),
        shapes(teacher, train.x),
        len(train),
        train_labels=train.y,
        feat_dim=16,
        nce_k=32,
        momentum=0.0,  # a visited bank row becomes exactly the sample's embedding
    )
    cache = TeacherCache(teacher, train.x, features=True)
    objective = DistillObjective(method, teacher, total_epochs=2, cache=cache)
    bank_before = method.memory_teacher.clone()
    index = shuffled_batch(len(train), size=32)

    objective(student, train.x[index], train.y[index], index, 0)

    with torch.no_grad():
        expected = F.normalize(method.embed_teacher(cache.embedding[index]), dim=1)
    torch.testing.assert_close(method.memory_teacher[index], expected)
    untouched = torch.ones(len(train), dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(method.memory_teacher[untouched], bank_before[untouched])


def test_fit_with_crd_updates_every_bank_row(blobs, new_model, make_config):
    train, val = blobs
    teacher, student = make_teacher(), new_model(0)
    method = build_method(
        "crd",
        shapes(student, train.x),
        shapes(teacher, train.x),
        len(train),
        train_labels=train.y,
        feat_dim=16,
        nce_k=32,
    )
    banks_before = [method.memory_student.clone(), method.memory_teacher.clone()]
    embed_before = method.embed_student.linear.weight.clone()
    cache = TeacherCache(teacher, train.x, features=True)

    result = fit(
        student,
        DistillObjective(method, teacher, total_epochs=2, cache=cache),
        train,
        val,
        make_config(epochs=2),
        num_classes=NUM_CLASSES,
        extra=method,
    )

    for bank, before in zip(
        (method.memory_student, method.memory_teacher), banks_before, strict=True
    ):
        changed = (bank != before).any(dim=1)
        assert changed.all(), f"{int((~changed).sum())} rows never reached"
        torch.testing.assert_close(bank.norm(dim=1), torch.ones(len(train)))
    assert not torch.equal(method.embed_student.linear.weight, embed_before)
    assert all(row["train_crd"] > 0 for row in result.history)
    assert result.best_extra_state.keys() == method.state_dict().keys()


def test_build_objective_builds_the_method_for_the_shapes_and_caches_only_when_asked(blobs):
    train, _ = blobs
    teacher = make_teacher("cnn3")
    torch.manual_seed(0)
    student = build_model("cnn3", INPUT_SHAPE, NUM_CLASSES)

    cached = build_objective(
        "crd", [student], teacher, train, epochs=3, cache_teacher=True, settings={"beta": 0.5}
    )
    live = build_objective("kd", [student], teacher, train, epochs=3, cache_teacher=False)

    assert cached.total_epochs == 3 and cached.teacher is teacher
    assert cached.method.hparams["beta"] == 0.5
    # CRD samples negatives by class: the method got the training labels.
    assert torch.equal(cached.method.train_labels, train.y)
    assert cached.cache is not None and live.cache is None
    index = shuffled_batch(len(train))
    assert_outputs_equal(
        cached.cache.lookup(index), teacher_outputs(teacher, train.x[index], features=True)
    )
    reference = build_method("kd", shapes(student, train.x), shapes(teacher, train.x), len(train))
    assert type(live.method) is type(reference)
    assert live.method.hparams == reference.hparams


def test_without_classes_keeps_every_other_row_and_subset_hash_follows_the_ids(blobs):
    train, _ = blobs
    kept = without_classes(train, [1, 3])

    expected = [i for i, label in enumerate(train.y.tolist()) if label not in (1, 3)]
    assert kept.ids.tolist() == train.ids[expected].tolist()
    assert torch.equal(kept.x, train.x[expected])
    assert without_classes(train, []) is train
    assert subset_hash(kept) == subset_hash(without_classes(train, [3, 1]))
    assert subset_hash(kept) != subset_hash(train)
    assert len(subset_hash(train)) == 16
