"""Random model outputs and batches for the distillation-method tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from kdflow.losses import DistillBatch, OutputShapes
from kdflow.models.base import ModelOutput

NUM_CLASSES = 10
NUM_TRAIN = 50  # tests that build crd use the same size
# The label of each training-set row; uneven class sizes, so crd's cap is not a round number.
TRAIN_LABELS = torch.randint(NUM_CLASSES, (NUM_TRAIN,), generator=torch.Generator().manual_seed(5))

# Student and teacher shapes; the stage counts and spatial sizes differ on purpose so that
# stage pairing and pooling are exercised (fitnet's hint stages (K − 1) // 2: 16×8 vs 24×8,
# equal sizes; 16×4×4 vs 32×2×2, a student map twice the teacher's).
LAYOUTS: dict[str, tuple[OutputShapes, OutputShapes]] = {
    "1d": (
        OutputShapes(features=[(8, 16), (16, 8), (32, 4)], embedding_dim=32, num_classes=10),
        OutputShapes(
            features=[(12, 16), (24, 8), (48, 4), (64, 2)], embedding_dim=64, num_classes=10
        ),
    ),
    "2d": (
        OutputShapes(
            features=[(8, 8, 8), (16, 4, 4), (32, 2, 2)], embedding_dim=32, num_classes=10
        ),
        OutputShapes(
            features=[(16, 8, 8), (32, 2, 2), (64, 2, 2)], embedding_dim=64, num_classes=10
        ),
    ),
}


def random_output(
    shapes: OutputShapes,
    batch_size: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    requires_grad: bool = False,
) -> ModelOutput:
    """Return a ModelOutput of standard-normal tensors with the given per-sample shapes."""

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=dtype).requires_grad_(requires_grad)

    return ModelOutput(
        logits=draw(batch_size, shapes.num_classes),
        features=[draw(batch_size, *shape) for shape in shapes.features],
        embedding=draw(batch_size, shapes.embedding_dim),
    )


def make_batch(
    student: OutputShapes,
    teacher: OutputShapes | None,
    *,
    batch_size: int = 8,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    num_students: int = 1,
    epoch: int = 0,
) -> DistillBatch:
    """Return a batch of random student (requiring grad) and teacher outputs, labels, indices.

    The labels are TRAIN_LABELS at the batch's indices, as a training set would give them.
    """
    generator = torch.Generator().manual_seed(seed)
    students = [
        random_output(student, batch_size, generator, dtype, requires_grad=True)
        for _ in range(num_students)
    ]
    teacher_output = (
        None if teacher is None else random_output(teacher, batch_size, generator, dtype)
    )
    indices = torch.randperm(NUM_TRAIN, generator=generator)[:batch_size]
    return DistillBatch(
        students=students,
        teacher=teacher_output,
        labels=TRAIN_LABELS[indices],
        indices=indices,
        epoch=epoch,
        total_epochs=40,
    )


def block_average(features: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Average non-overlapping blocks so that the spatial shape becomes `size`."""
    batch, channels, *spatial = features.shape
    shape = [batch, channels]
    for length, target in zip(spatial, size, strict=True):
        shape += [target, length // target]
    blocks = features.reshape(shape)
    return blocks.mean(dim=tuple(range(3, blocks.dim(), 2)))


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> tuple[OutputShapes, OutputShapes]:
    """Return a (student, teacher) shape pair, once with 1-D and once with 2-D features."""
    return LAYOUTS[request.param]


@pytest.fixture
def batch_factory() -> Callable[..., DistillBatch]:
    """Return make_batch, for tests that build their own batches."""
    return make_batch


@pytest.fixture(name="block_average")
def block_average_fixture() -> Callable[[torch.Tensor, tuple[int, ...]], torch.Tensor]:
    """Return block_average, an independent stand-in for adaptive average pooling."""
    return block_average
