"""`crd`: contrastive representation distillation (ALGORITHMS.md §4).

    crd | contrastive representation distillation: linear embeds + l2-norm, momentum
          memory bank of N negatives, NCE loss (stretch goal) | 0.8

As in the CRD paper and RepDistiller's `crd`: student and teacher embeddings are
mapped by linear heads to `feat_dim` and l2-normalised. Two memory banks of N =
num_train rows hold a momentum average of each side's embedding per training sample.
The student embedding is scored against the teacher bank and the teacher embedding
against the student bank, at its own row (positive) and at nce_k rows drawn uniformly
from the others (negatives); scores exp(v·m / T) are divided by a constant Z fixed on
the first batch, and each side pays the NCE loss with noise probability 1/N.

Negatives come from a torch.Generator seeded by `seed`, whose state is saved with
the module, so runs and resumed runs draw the same negatives. The banks are updated
only in training mode, so evaluating the loss does not write validation rows.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdflow.errors import KdflowError
from kdflow.losses import METHODS
from kdflow.losses.base import (
    LOGIT_KD_DEFAULTS,
    DistillBatch,
    FeatureDistillMethod,
    OutputShapes,
)

NCE_EPS = 1e-7  # RepDistiller's ContrastLoss guard on the NCE ratios

log = logging.getLogger(__name__)


class Embed(nn.Module):
    """A linear head followed by l2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        """Return the unit-norm B×dim_out embedding of B×dim_in inputs."""
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def nce_loss(scores: Tensor, num_data: int) -> Tensor:
    """Return the NCE loss of B×(1+K) normalised scores whose column 0 is the positive."""
    num_negatives = scores.shape[1] - 1
    noise = num_negatives / num_data  # K · P_n with the uniform noise distribution P_n = 1/N
    positive, negatives = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(positive / (positive + noise + NCE_EPS))
    log_d0 = torch.log(noise / (negatives + noise + NCE_EPS))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


@METHODS.register("crd")
class CRD(FeatureDistillMethod):
    """Contrast each student embedding with the teacher's embeddings of other samples."""

    term = "crd"
    needs_indices = True
    defaults = {
        **LOGIT_KD_DEFAULTS,
        "beta": 0.8,
        "feat_dim": 128.0,
        "nce_k": 4096.0,
        "nce_t": 0.07,
        "momentum": 0.5,
        "seed": 0.0,
    }

    def __init__(
        self,
        student: OutputShapes,
        teacher: OutputShapes | None,
        num_train: int,
        **overrides: float,
    ) -> None:
        super().__init__(student, teacher, num_train, **overrides)
        assert teacher is not None  # the base class raised otherwise
        if num_train < 2:
            raise KdflowError(f"crd needs at least 2 training samples, got {num_train}")
        feat_dim = int(self.hparams["feat_dim"])
        self.num_data = num_train
        self.num_negatives = min(int(self.hparams["nce_k"]), num_train - 1)
        self.embed_student = Embed(student.embedding_dim, feat_dim)
        self.embed_teacher = Embed(teacher.embedding_dim, feat_dim)
        self.generator = torch.Generator().manual_seed(int(self.hparams["seed"]))
        # RepDistiller's initialisation: uniform in ±1/sqrt(feat_dim / 3).
        bound = 1.0 / math.sqrt(feat_dim / 3)
        shape = (num_train, feat_dim)
        self.memory_student: Tensor  # N×feat_dim, momentum average of student embeddings
        self.memory_teacher: Tensor  # N×feat_dim, momentum average of teacher embeddings
        self.register_buffer("memory_student", self._uniform(shape, bound))
        self.register_buffer("memory_teacher", self._uniform(shape, bound))
        # Sized by the data set (2×N×feat_dim floats): 50k CIFAR images at 128 dims is 49 MiB.
        log.info(
            "crd: memory bank 2×%d×%d = %.1f MiB",
            num_train,
            feat_dim,
            2 * 4 * num_train * feat_dim / 2**20,
        )
        # Normalising constants Z, fixed from the first batch; negative means "not yet set".
        self.z_student: Tensor
        self.z_teacher: Tensor
        self.register_buffer("z_student", torch.tensor(-1.0))
        self.register_buffer("z_teacher", torch.tensor(-1.0))

    def _uniform(self, shape: tuple[int, int], bound: float) -> Tensor:
        """Return a tensor uniform in [−bound, bound) drawn from the seeded generator."""
        return torch.rand(shape, generator=self.generator) * 2 * bound - bound

    def get_extra_state(self) -> Any:
        """Return the negative sampler's state, so a resumed run draws the same negatives."""
        return self.generator.get_state()

    def set_extra_state(self, state: Any) -> None:
        """Restore the negative sampler's state saved by get_extra_state."""
        self.generator.set_state(state)

    def sample_contrast_indices(self, indices: Tensor) -> Tensor:
        """Return B×(1+K) bank rows: each sample's own row, then K distinct-from-it negatives."""
        own = indices.long()
        # Drawn on the host from the seeded generator, then compared on the indices' device:
        # moving the indices to the host instead would wait for the GPU every step.
        draws = torch.randint(
            self.num_data - 1, (len(own), self.num_negatives), generator=self.generator
        ).to(own.device, non_blocking=True)
        # Drawing from N−1 values and skipping the sample's own row makes negatives uniform
        # over the other rows.
        negatives = draws + (draws >= own.unsqueeze(1)).long()
        return torch.cat([own.unsqueeze(1), negatives], dim=1)

    def _scores(self, bank: Tensor, rows: Tensor, embedding: Tensor, z: Tensor) -> Tensor:
        """Return exp(bank[rows]·embedding / T) / Z as B×(1+K), setting Z on first use."""
        weights = bank[rows].detach()  # B×(1+K)×feat_dim
        scores = torch.exp(
            torch.bmm(weights, embedding.unsqueeze(2)).squeeze(2) / self.hparams["nce_t"]
        )
        # Set once, without reading z on the host (a GPU sync per step); in float64, as the
        # product of a Python float and N would be.
        first = (scores.detach().mean().double() * self.num_data).to(z.dtype)
        z.copy_(torch.where(z < 0, first, z))
        return scores / z

    @torch.no_grad()
    def _update_bank(self, bank: Tensor, indices: Tensor, embedding: Tensor) -> None:
        """Move the banks' rows for `indices` towards `embedding` and renormalise them."""
        momentum = self.hparams["momentum"]
        mixed = bank[indices] * momentum + embedding.detach() * (1 - momentum)
        bank.index_copy_(0, indices, F.normalize(mixed, dim=1))

    def feature_loss(self, batch: DistillBatch) -> Tensor:
        """Return the student-side plus teacher-side NCE loss on the embeddings."""
        if batch.indices is None:
            raise KdflowError("crd needs the batch's training-set indices, but none were given")
        # The banks' device decides, so CPU-held indices work with a model on an accelerator.
        indices = batch.indices.to(self.memory_student.device).long()
        student = self.embed_student(batch.students[0].embedding)
        teacher = self.embed_teacher(batch.require_teacher().embedding)
        rows = self.sample_contrast_indices(indices)
        student_scores = self._scores(self.memory_teacher, rows, student, self.z_student)
        teacher_scores = self._scores(self.memory_student, rows, teacher, self.z_teacher)
        loss = nce_loss(student_scores, self.num_data) + nce_loss(teacher_scores, self.num_data)
        if self.training:
            self._update_bank(self.memory_student, indices, student)
            self._update_bank(self.memory_teacher, indices, teacher)
        return loss
