"""The compiled training step that `runtime.compile` turns on, checked on the CPU.

`compile_step` compiles the whole objective (student forward, live teacher, loss); on CUDA it
is replayed as CUDA graphs, which need a GPU, but the tracing is the same on the CPU. These
tests check that a compiled KD run trains like the eager one, compiles a fixed number of times
(not once per epoch) and resumes from its checkpoint exactly.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters

from kdflow.data.tensors import Split
from kdflow.errors import KdflowError
from kdflow.models import build_model
from kdflow.train.augment import CropFlip
from kdflow.train.device import compile_step
from kdflow.train.distill import build_objective
from kdflow.train.teacher import cross_entropy_objective
from kdflow.train.trainer import fit
from tests.train.helpers import Interrupted, assert_same_state

SHAPE = (3, 8, 8)
CLASSES = 4


def test_compile_step_refuses_a_device_inductor_does_not_target():
    with pytest.raises(KdflowError, match="runtime.compile supports cuda and cpu, not mps"):
        compile_step(cross_entropy_objective, torch.device("mps"))


def _uint8_images(n: int) -> Split:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *SHAPE), generator=generator, dtype=torch.uint8)
    stats = (torch.full((1, 3, 1, 1), 127.0), torch.full((1, 3, 1, 1), 64.0))
    return Split(images, torch.arange(n) % CLASSES, torch.arange(n), stats)


def test_compile_step_on_a_cpu_without_a_cpp_compiler_says_how_to_fix_it():
    from torch._inductor import config

    with (
        config.patch({"cpp.cxx": ("kdflow-no-such-compiler",)}),
        pytest.raises(KdflowError, match="needs a C\\+\\+ compiler: install g\\+\\+"),
    ):
        compile_step(cross_entropy_objective, torch.device("cpu"))


def _kd_run(split: Split, config, **hooks):
    torch.manual_seed(0)
    teacher = build_model("cnn3", SHAPE, CLASSES).eval()
    student = build_model("cnn3", SHAPE, CLASSES)
    objective = build_objective(
        "kd", [student], teacher, split, epochs=config.optim.epochs, cache_teacher=False
    )
    result = fit(
        student,
        objective,
        split,
        split,
        config,
        num_classes=CLASSES,
        extra=objective.method,
        augment=CropFlip(2),
        **hooks,
    )
    return student, result


@pytest.mark.slow
def test_compiled_kd_step_trains_like_the_eager_one_and_compiles_four_times(make_config):
    split = _uint8_images(80)  # batches of 32: the last one of each epoch holds 16
    config = make_config(epochs=3, batch_size=32)
    torch._dynamo.reset()
    counters.clear()

    eager_model, eager = _kd_run(split, config)
    compiled_model, compiled = _kd_run(split, dataclasses.replace(config, compile=True))

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


@pytest.mark.slow
def test_interrupted_compiled_run_resumes_exactly(make_config, tmp_path):
    split = _uint8_images(80)
    config = dataclasses.replace(make_config(epochs=3, batch_size=32), compile=True)
    torch._dynamo.reset()
    reference_model, reference = _kd_run(split, config)

    def stop_after_epoch_1(row: dict[str, float]) -> None:
        if row["epoch"] == 1:
            raise Interrupted

    interrupted = dataclasses.replace(config, checkpoint=tmp_path / "run.pt")
    torch._dynamo.reset()
    with pytest.raises(Interrupted):
        _kd_run(split, interrupted, on_epoch_end=stop_after_epoch_1)
    torch._dynamo.reset()  # as in a new process: compiled afresh, first with epoch 1 as a constant
    resumed_model, resumed = _kd_run(split, interrupted)

    assert resumed.resumed_from == 1
    assert resumed.history == reference.history
    assert_same_state(resumed_model.state_dict(), reference_model.state_dict())
