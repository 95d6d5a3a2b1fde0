"""The compiled training step: what `runtime.compile` turns on for CUDA, checked on the CPU.

On CUDA, `compile_step` compiles the whole objective (student forward, live teacher, loss) and
replays it as CUDA graphs. The graphs need a GPU, but the tracing does not: `compiled_step`
compiles the same way on the CPU, so these tests check that a compiled KD run trains like the
eager one and compiles a fixed number of times, not once per epoch.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from kdflow.data.tensors import Split
from kdflow.losses import OutputShapes, build_method
from kdflow.models import build_model
from kdflow.train.augment import CropFlip
from kdflow.train.device import compile_step, compiled_step
from kdflow.train.distill import DistillObjective
from kdflow.train.teacher import cross_entropy_objective
from kdflow.train.trainer import fit

SHAPE = (3, 8, 8)
CLASSES = 4


def test_compile_step_is_the_objective_itself_off_cuda():
    assert compile_step(cross_entropy_objective, torch.device("cpu")) is cross_entropy_objective


def _uint8_images(n: int) -> Split:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *SHAPE), generator=generator, dtype=torch.uint8)
    stats = (torch.full((1, 3, 1, 1), 127.0), torch.full((1, 3, 1, 1), 64.0))
    return Split(images, torch.arange(n) % CLASSES, torch.arange(n), stats)


def _kd_run(split: Split, config, compiled: bool):
    torch.manual_seed(0)
    teacher = build_model("cnn3", SHAPE, CLASSES).eval()
    student = build_model("cnn3", SHAPE, CLASSES)
    probe = split.batch(slice(0, 2))
    with torch.no_grad():
        shapes = [
            OutputShapes.measure(m.eval().forward_features(probe)) for m in (student, teacher)
        ]
    method = build_method("kd", *shapes, len(split))
    objective = DistillObjective(method, teacher, total_epochs=config.optim.epochs)
    step = compiled_step(objective) if compiled else objective
    result = fit(
        student, step, split, split, config, num_classes=CLASSES, extra=method, augment=CropFlip(2)
    )
    return student, result


@pytest.mark.slow
def test_compiled_kd_step_trains_like_the_eager_one_and_compiles_four_times(make_config):
    split = _uint8_images(80)  # batches of 32: the last one of each epoch holds 16
    config = make_config(epochs=3, batch_size=32)
    torch._dynamo.reset()
    counters.clear()

    eager_model, eager = _kd_run(split, config, compiled=False)
    compiled_model, compiled = _kd_run(split, config, compiled=True)

    # Two batch shapes, each compiled with epoch 0 and once more when the epoch turns dynamic.
    assert counters["stats"]["unique_graphs"] == 4
    assert not counters["graph_break"]
    for want, got in zip(eager.history, compiled.history, strict=True):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    for (name, want), got in zip(
        eager_model.state_dict().items(), compiled_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)
