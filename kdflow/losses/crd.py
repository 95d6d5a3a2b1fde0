"""`crd`: contrastive representation distillation (docs/algorithms.md, "crd").

    L = γ·CRD_NCE(student side) + CRD_NCE(teacher side) weighted by β;  γ = 1, β = 0.8

As RepDistiller's crd/criterion.py and crd/memory.py with its train_student.py defaults
(`-a 0 -b 0.8`, --feat_dim 128, --nce_k 16384, --nce_t 0.07, --nce_m 0.5, --mode exact)
and mdistiller's CFG.CRD: student and teacher embeddings are mapped by linear heads to
`feat_dim` and l2-normalised. Two memory banks of N = num_train rows hold a momentum
average of each side's embedding per training sample. The student embedding is scored
against the teacher bank and the teacher embedding against the student bank, at its own
row (positive) and at K = nce_k rows of other classes (negatives); scores exp(v·m / T)
are divided by a constant Z fixed on the first batch, and each side pays the NCE loss with
the original's noise probability 1/N.

Negatives as the original's `exact` mode (dataset/cifar100.py CIFAR100InstanceSample):
per anchor, K distinct rows drawn uniformly from the samples whose class differs from the
anchor's, so the method is built with the training labels (needs_train_labels). K is
capped at N − (largest class count), the smallest such pool, and the cap is logged.

Each step draws one seed from a torch.Generator seeded by `seed`, whose state is saved
with the module, and draws that step's random keys with it on the banks' device: runs and
resumed runs draw the same negatives on one device, and no step waits for the GPU. The
banks are updated only in training mode, so evaluating the loss writes no rows.
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
    COUNT,
    FEATURE_DEFAULTS,
    LOGIT_KD_RANGES,
    MOMENTUM,
    POSITIVE,
    SEED,
    WEIGHT,
    DistillBatch,
    FeatureDistillMethod,
    OutputShapes,
)

NCE_EPS = 1e-7  # RepDistiller's ContrastLoss guard on the NCE ratios
SEED_BOUND = 2**62  # each step's seed for the on-device draws is below this

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
    needs_train_labels = True
    defaults = {
        **FEATURE_DEFAULTS,
        "beta": 0.8,
        "feat_dim": 128.0,
        "nce_k": 16384.0,
        "nce_t": 0.07,
        "momentum": 0.5,
        "seed": 0.0,
    }
    ranges = {
        **LOGIT_KD_RANGES,
        "beta": WEIGHT,
        "feat_dim": COUNT,
        "nce_k": COUNT,
        "nce_t": POSITIVE,
        "momentum": MOMENTUM,
        "seed": SEED,
    }

    def __init__(
        self,
        student: OutputShapes,
        teacher: OutputShapes | None,
        num_train: int,
        *,
        train_labels: Tensor | None = None,
        **overrides: float,
    ) -> None:
        super().__init__(student, teacher, num_train, train_labels=train_labels, **overrides)
        assert teacher is not None and train_labels is not None  # the base class raised otherwise
        labels = train_labels.detach().long().cpu().clone()  # once, at build: no per-step sync
        largest_class = int(torch.bincount(labels).max()) if num_train else 0
        self.num_negatives = self._capped_negatives(
            int(self.hparams["nce_k"]), num_train, largest_class
        )
        feat_dim = int(self.hparams["feat_dim"])
        self.num_data = num_train
        self.embed_student = Embed(student.embedding_dim, feat_dim)
        self.embed_teacher = Embed(teacher.embedding_dim, feat_dim)
        self.generator = torch.Generator().manual_seed(int(self.hparams["seed"]))
        self._step_generators: dict[torch.device, torch.Generator] = {}
        # Labels by training-set row; not saved: they come with the data, not the run.
        self.train_labels: Tensor  # N
        self.register_buffer("train_labels", labels, persistent=False)
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

    @staticmethod
    def _capped_negatives(asked: int, num_train: int, largest_class: int) -> int:
        """Return K: `asked`, capped at the other-class pool of the largest class."""
        pool = num_train - largest_class  # the fewest rows any anchor can draw from
        if pool < 1:
            raise KdflowError(
                f"crd draws negatives from other classes, but the {num_train} training "
                "samples hold a single class"
            )
        if asked > pool:
            log.warning(
                "crd: nce_k = %d negatives asked, but the smallest other-class pool holds "
                "%d (%d training samples − %d of the largest class); using K = %d",
                asked,
                pool,
                num_train,
                largest_class,
                pool,
            )
            return pool
        return asked

    def _uniform(self, shape: tuple[int, int], bound: float) -> Tensor:
        """Return a tensor uniform in [−bound, bound) drawn from the seeded generator."""
        return torch.rand(shape, generator=self.generator) * 2 * bound - bound

    def get_extra_state(self) -> Any:
        """Return the negative sampler's state, so a resumed run draws the same negatives."""
        return self.generator.get_state()

    def set_extra_state(self, state: Any) -> None:
        """Restore the negative sampler's state saved by get_extra_state."""
        self.generator.set_state(state)

    def _step_generator(self, device: torch.device) -> torch.Generator:
        """Return a generator on `device`, reseeded from the saved host generator."""
        if device not in self._step_generators:
            self._step_generators[device] = torch.Generator(device=device)
        # One host draw per step: the seed, never the keys, crosses to the device.
        seed = int(torch.randint(SEED_BOUND, (1,), generator=self.generator))
        return self._step_generators[device].manual_seed(seed)

    def sample_contrast_indices(self, indices: Tensor) -> Tensor:
        """Return B×(1+K) bank rows: each own row, then K distinct rows of other classes."""
        own = indices.long()
        labels = self.train_labels.to(own.device)
        keys = torch.rand(
            (len(own), self.num_data), generator=self._step_generator(own.device), device=own.device
        )  # B×N
        # Rows of the anchor's class sort last, so the K smallest keys are K distinct rows
        # drawn uniformly from the other classes, as numpy's choice(replace=False) in the
        # original; the anchor's own row is of its class, so it is never a negative.
        same_class = labels.unsqueeze(0) == labels[own].unsqueeze(1)  # B×N
        negatives = (
            keys.masked_fill(same_class, 2.0).topk(self.num_negatives, largest=False).indices
        )
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
