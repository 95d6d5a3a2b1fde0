"""The training loop: history, selection, determinism, resumable checkpoints, loud failures."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import pytest
import torch

from kdflow.config import OptimParams
from kdflow.data.tensors import Split
from kdflow.errors import KdflowError
from kdflow.models import build_model
from kdflow.train.augment import CropFlip
from kdflow.train.device import resolve_device
from kdflow.train.optim import learning_rate
from kdflow.train.teacher import cross_entropy_objective
from kdflow.train.trainer import FitResult, evaluate, fit
from tests.train.helpers import Interrupted, assert_same_state

NUM_CLASSES = 4
TRAINER_LOG = "kdflow.train.trainer"


def run_fit(new_model, blobs, config, **kwargs) -> tuple[torch.nn.Module, FitResult]:
    model = new_model()
    train, val = blobs
    result = fit(
        model, cross_entropy_objective, train, val, config, num_classes=NUM_CLASSES, **kwargs
    )
    return model, result


def test_fit_lowers_training_loss_and_reports_each_epoch(new_model, blobs, make_config):
    model, result = run_fit(new_model, blobs, make_config(epochs=4))

    history = result.history
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    for row in history:
        assert {"epoch", "lr", "train_loss", "train_ce", "val_acc", "val_cmi"} <= row.keys()
        assert row["train_loss"] == row["train_ce"]  # CE is the only term
        assert 0.0 <= row["val_acc"] <= 1.0 and row["val_cmi"] >= 0.0
    cosine = [0.05 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)]
    assert [row["lr"] for row in history] == pytest.approx(cosine, rel=1e-12)
    losses = [row["train_loss"] for row in history]
    assert losses[-1] < losses[0] - 0.1, losses
    # The last row describes the weights the model ends with.
    final = evaluate(model, blobs[1], NUM_CLASSES)
    assert history[-1]["val_acc"] == final["acc"]
    assert history[-1]["val_cmi"] == pytest.approx(final["cmi"], rel=1e-9)
    assert result.resumed_from == 0
    assert result.best_epoch == 1 + max(range(4), key=lambda i: (history[i]["val_acc"], -i))


def test_best_state_is_the_epoch_the_selector_picks(new_model, blobs, make_config):
    _, picked_first = run_fit(new_model, blobs, make_config(epochs=3), select=lambda history: 0)
    _, one_epoch = run_fit(new_model, blobs, make_config(epochs=1))

    assert picked_first.best_epoch == 1
    assert_same_state(picked_first.best_state, one_epoch.best_state)
    # The later epochs did move the weights, so the comparison above is not vacuous.
    _, last_epoch = run_fit(new_model, blobs, make_config(epochs=3), select=lambda h: len(h) - 1)
    assert not torch.equal(
        last_epoch.best_state["head.fc.weight"], picked_first.best_state["head.fc.weight"]
    )


def test_same_seed_gives_bit_identical_weights(new_model, blobs, make_config):
    first_model, first = run_fit(new_model, blobs, make_config(epochs=3))
    second_model, second = run_fit(new_model, blobs, make_config(epochs=3))
    _, reseeded = run_fit(new_model, blobs, make_config(epochs=3, seed=1))

    assert first.history == second.history
    assert_same_state(first_model.state_dict(), second_model.state_dict())
    assert_same_state(first.best_state, second.best_state)
    assert reseeded.history != first.history  # the seed does drive the shuffling


def test_an_indexed_device_name_trains_in_place_like_the_plain_one(new_model, blobs, make_config):
    # Data placed on "cuda" reports "cuda:0"; the trainer once took that mismatch for a data
    # set streamed from host memory and failed at the first batch. "cpu:0" is the same case.
    plain_model, plain = run_fit(new_model, blobs, make_config(epochs=2))
    indexed = dataclasses.replace(make_config(epochs=2), device=torch.device("cpu", 0))
    indexed_model, indexed_result = run_fit(new_model, blobs, indexed)

    assert indexed_result.history == plain.history
    assert_same_state(indexed_model.state_dict(), plain_model.state_dict())


def test_interrupted_fit_resumes_exactly(new_model, blobs, make_config, tmp_path):
    reference_model, reference = run_fit(
        new_model, blobs, make_config(epochs=5, checkpoint="reference.pt")
    )
    config = make_config(epochs=5, checkpoint="run.pt")

    def stop_after_epoch_2(row: dict[str, float]) -> None:
        if row["epoch"] == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_fit(new_model, blobs, config, on_epoch_end=stop_after_epoch_2)
    assert config.checkpoint is not None and config.checkpoint.is_file()

    resumed_model, resumed = run_fit(new_model, blobs, config)

    assert resumed.resumed_from == 2
    assert resumed.history == reference.history
    assert resumed.best_epoch == reference.best_epoch
    assert_same_state(resumed.best_state, reference.best_state)
    assert_same_state(resumed_model.state_dict(), reference_model.state_dict())


def test_checkpoint_of_another_run_is_ignored(new_model, blobs, make_config, caplog):
    other = make_config(epochs=3, checkpoint="shared.pt", run_key="other params")
    run_fit(new_model, blobs, other)
    _, from_scratch = run_fit(new_model, blobs, make_config(epochs=3))

    with caplog.at_level(logging.WARNING, logger=TRAINER_LOG):
        _, result = run_fit(new_model, blobs, make_config(epochs=3, checkpoint="shared.pt"))

    assert result.resumed_from == 0
    assert result.history == from_scratch.history
    assert "belongs to other params or data" in caplog.text


def test_truncated_checkpoint_is_ignored_with_a_warning(new_model, blobs, make_config, caplog):
    config = make_config(epochs=3, checkpoint="cut.pt")
    run_fit(new_model, blobs, config)
    assert config.checkpoint is not None
    data = config.checkpoint.read_bytes()
    config.checkpoint.write_bytes(data[: len(data) // 2])
    _, from_scratch = run_fit(new_model, blobs, make_config(epochs=3))

    with caplog.at_level(logging.WARNING, logger=TRAINER_LOG):
        _, result = run_fit(new_model, blobs, config)

    assert result.resumed_from == 0
    assert result.history == from_scratch.history
    assert f"ignoring unreadable checkpoint {config.checkpoint}" in caplog.text


@pytest.mark.parametrize("schedule", ["cosine", "multistep", "constant"])
def test_checkpoint_loads_weights_only(new_model, blobs, make_config, schedule):
    milestones = [1] if schedule == "multistep" else []
    config = make_config(epochs=2, checkpoint="ckpt.pt", schedule=schedule, milestones=milestones)
    model, result = run_fit(new_model, blobs, config)

    state = torch.load(config.checkpoint, weights_only=True)

    assert state["run_key"] == "key"
    assert state["history"] == result.history
    assert_same_state(state["model"], model.state_dict())
    assert_same_state(state["best_state"], result.best_state)
    # The checkpoint holds the rate of the last finished epoch; the next one is recomputed.
    assert state["optimizer"]["lr"] == result.history[-1]["lr"]
    assert len(state["optimizer"]["buffers"]) == len(list(model.parameters()))


def test_nan_loss_raises_before_checkpointing(new_model, blobs, make_config):
    train, val = blobs
    corrupt = train.subset(torch.arange(len(train)))
    corrupt.x[5, 0, 3] = float("nan")  # one bad sample poisons its batch's loss
    config = make_config(epochs=2, checkpoint="nan.pt")

    with pytest.raises(KdflowError, match=r"training loss became nan in epoch 1"):
        fit(new_model(), cross_entropy_objective, corrupt, val, config, num_classes=NUM_CLASSES)
    assert config.checkpoint is not None and not config.checkpoint.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_one_line_error():
    with pytest.raises(KdflowError) as raised:
        resolve_device("cuda")

    message = str(raised.value)
    assert "\n" not in message
    assert "'cuda'" in message and "runtime.device" in message


def test_cpu_device_resolves():
    assert resolve_device("cpu") == torch.device("cpu")


def _torch_lrs(optim: OptimParams) -> list[float]:
    """Return the per-epoch rates torch's own schedulers give (an independent reference)."""
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=optim.lr)
    if optim.schedule == "cosine":
        scheduler: Any = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, optim.epochs)
    elif optim.schedule == "multistep":
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, optim.milestones, gamma=optim.lr_decay
        )
    else:
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    rates = []
    for _ in range(optim.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize(
    "optim",
    [
        OptimParams(epochs=10, batch_size=8, lr=0.1, schedule="cosine"),
        OptimParams(epochs=240, batch_size=64, lr=0.05, schedule="cosine"),
        OptimParams(
            epochs=10, batch_size=8, lr=0.1, schedule="multistep", milestones=[3, 7], lr_decay=0.2
        ),
        OptimParams(
            epochs=240, batch_size=64, lr=0.05, schedule="multistep", milestones=[150, 180, 210]
        ),
        OptimParams(epochs=4, batch_size=8, lr=0.1, schedule="constant"),
    ],
    ids=["cosine", "cosine-240", "multistep", "multistep-paper", "constant"],
)
def test_schedule_matches_torch_schedulers(optim: OptimParams):
    ours = [learning_rate(optim, epoch) for epoch in range(optim.epochs)]

    assert ours == pytest.approx(_torch_lrs(optim), rel=1e-9, abs=1e-15)


def test_cosine_schedule_follows_the_formula():
    optim = OptimParams(epochs=10, batch_size=8, lr=0.1, schedule="cosine")

    expected = [0.1 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(10)]
    assert [learning_rate(optim, t) for t in range(10)] == pytest.approx(expected, rel=1e-12)


def test_resumed_result_reports_its_start(new_model, blobs, make_config):
    config = make_config(epochs=2, checkpoint="done.pt")
    _, first = run_fit(new_model, blobs, config)

    # A kill after the last checkpoint but before the outputs: the rerun trains nothing.
    _, again = run_fit(new_model, blobs, config)

    assert again.resumed_from == 2
    assert again.history == first.history
    assert_same_state(again.best_state, first.best_state)


def fit_images(split, config, augment, objective=cross_entropy_objective):
    """Return a freshly seeded 3×8×8 cnn3 trained on `split` (its own val), and the result."""
    torch.manual_seed(0)
    model = build_model("cnn3", (3, 8, 8), 4)
    result = fit(model, objective, split, split, config, num_classes=4, augment=augment)
    return model, result


def test_augmented_fit_sees_augmented_batches_and_repeats_exactly(make_config):
    generator = torch.Generator().manual_seed(0)
    images = Split(
        torch.randn(96, 3, 8, 8, generator=generator), torch.arange(96) % 4, torch.arange(96)
    )
    seen: list[torch.Tensor] = []

    def recording_objective(model, x, y, index, epoch):
        seen.append(x.clone())
        return cross_entropy_objective(model, x, y, index, epoch)

    def run(augment):
        seen.clear()
        config = make_config(epochs=2, batch_size=32)
        _, result = fit_images(images, config, augment, recording_objective)
        return result, [x.clone() for x in seen]

    crop_flip = CropFlip(2, [0.0] * 3, [1.0] * 3)
    first, first_batches = run(crop_flip)
    again, again_batches = run(crop_flip)
    plain, plain_batches = run(None)

    assert first.history == again.history
    assert all(torch.equal(a, b) for a, b in zip(first_batches, again_batches, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first_batches, plain_batches, strict=True))
    # Without augmentation the batches are the stored samples themselves.
    assert any(torch.equal(plain_batches[0][0], images.x[i]) for i in range(len(images)))


def test_uint8_images_train_exactly_like_their_normalised_floats(make_config):
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (96, 3, 8, 8), generator=generator, dtype=torch.uint8)
    labels, ids = torch.arange(96) % 4, torch.arange(96)
    mean, std = [120.0, 110.0, 100.0], [60.0, 62.0, 64.0]
    stats = (torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1))
    raw = Split(pixels, labels, ids, stats)
    floats = Split((pixels.float() - stats[0]) / stats[1], labels, ids)

    config = make_config(epochs=2, batch_size=32)
    # Padding with raw 0 then normalising equals padding with a normalised black pixel.
    for raw_augment, float_augment in [(None, None), (CropFlip(2), CropFlip(2, mean, std))]:
        raw_model, raw_result = fit_images(raw, config, raw_augment)
        float_model, float_result = fit_images(floats, config, float_augment)

        assert raw_result.history == float_result.history
        assert_same_state(raw_model.state_dict(), float_model.state_dict())
