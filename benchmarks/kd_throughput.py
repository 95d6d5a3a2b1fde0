"""KD training throughput: kdflow's trainer against a reference-style CIFAR KD loop.

Both sides train the same freshly seeded student with the `kd` loss (γ·CE + α·T²·KL, T = 4)
from the same teacher on the same synthetic CIFAR-shaped data (uint8 images, 100 classes),
with the same augmentation distribution (4-px padded random crop + horizontal flip) and SGD
(momentum 0.9, weight decay 5e-4).

- reference: the way common CIFAR KD code does it: a Dataset whose `__getitem__` pads, crops,
  flips and normalises one image, a DataLoader with worker processes, a teacher forward under
  `no_grad` each step, and `.item()` on the loss every step for logging.
- kdflow: `fit()` with the `kd` method, the training set held as one uint8 tensor on the
  device, augmentation of whole batches there (`CropFlip`) and then normalisation,
  channels_last, the teacher under `inference_mode`, losses accumulated on the device and
  read once per epoch. With `--compile`, as with `runtime.compile: true`, the whole step is
  compiled (on the CPU without CUDA graphs).

Each side runs one untimed warm-up epoch (kdflow compiled: two, as it compiles again when the
epoch number first changes), then `--epochs` timed epochs; samples/s is the median over timed
epochs. The last two lines are `ratio <pair>: X` (kdflow / reference).

    .venv/bin/python benchmarks/kd_throughput.py                 # both pairs, CPU
    .venv/bin/python benchmarks/kd_throughput.py --compile       # kdflow's step compiled
    .venv/bin/python benchmarks/kd_throughput.py --samples 2048 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from _cifar import CLASSES, MEAN, STD, synthetic_cifar, uint8_split
from torch.utils.data import DataLoader, Dataset

from kdflow.config import OptimParams
from kdflow.losses import OutputShapes, build_method
from kdflow.models import build_model
from kdflow.train.augment import CropFlip
from kdflow.train.device import resolve_device
from kdflow.train.distill import DistillObjective
from kdflow.train.trainer import FitConfig, fit

PAIRS = [("resnet20", "resnet8"), ("resnet32x4", "resnet8x4")]
KD = {"gamma": 0.1, "alpha": 0.9, "temperature": 4.0}


class ReferenceCifar(Dataset):
    """Per-sample pad + random crop + flip + normalise, as a torchvision pipeline does it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = F.pad(self.images[i].float(), (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,)).tolist()
        image = image[:, top : top + 32, left : left + 32]
        if torch.rand(()) < 0.5:
            image = image.flip(2)
        return (image - self.mean) / self.std, int(self.labels[i])


def reference_epochs(teacher, student, images, labels, args) -> list[float]:
    """Return samples/s of each epoch of the reference loop (the first is the warm-up)."""
    loader = DataLoader(
        ReferenceCifar(images, labels),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        drop_last=False,
    )
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    temperature = KD["temperature"]
    rates = []
    for _ in range(args.epochs + 1):
        start, seen, running = time.perf_counter(), 0, 0.0
        student.train()
        for x, y in loader:
            with torch.no_grad():
                teacher_logits = teacher(x)
            logits = student(x)
            kl = F.kl_div(
                F.log_softmax(logits / temperature, 1),
                F.softmax(teacher_logits / temperature, 1),
                reduction="batchmean",
            )
            loss = KD["gamma"] * F.cross_entropy(logits, y) + KD["alpha"] * temperature**2 * kl
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item()  # the per-step logging common loops do
            seen += len(y)
        rates.append(seen / (time.perf_counter() - start))
    return rates


def kdflow_epochs(teacher, student, images, labels, args, device) -> list[float]:
    """Return samples/s of each epoch of kdflow's `fit()` (the first is a warm-up)."""
    train = uint8_split(images, labels, device)  # normalised batch by batch, after augmenting
    val = train.subset(torch.arange(10, device=device))  # selection work kept negligible
    with torch.no_grad():
        probe = train.batch(slice(0, 2))
        student_shapes = OutputShapes.measure(student.eval().forward_features(probe))
        teacher_shapes = OutputShapes.measure(teacher.forward_features(probe))
    method = build_method("kd", student_shapes, teacher_shapes, len(train), **KD).to(device)
    warmup = 2 if args.compile else 1
    objective = DistillObjective(method, teacher, total_epochs=args.epochs + warmup)
    stamps: list[float] = []

    def stamp(_row: dict) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    optim = OptimParams(epochs=args.epochs + warmup, batch_size=args.batch_size, lr=0.05)
    start = time.perf_counter()
    fit(
        student,
        objective,
        train,
        val,
        FitConfig(optim=optim, seed=0, device=device, compile=args.compile),
        num_classes=CLASSES,
        extra=method,
        augment=CropFlip(4),  # on raw pixels: pads with 0
        on_epoch_end=stamp,
    )
    edges = [start, *stamps]
    rates = [len(train) / (b - a) for a, b in zip(edges, edges[1:], strict=False)]
    return rates[warmup - 1 :]  # one warm-up rate left first, as the reference's


def measure(teacher_name: str, student_name: str, args: argparse.Namespace) -> dict:
    """Return both sides' median samples/s over the timed epochs for one pair."""
    device = resolve_device(args.device)
    images, labels = synthetic_cifar(args.samples, seed=0)
    results = {
        "pair": f"{teacher_name}->{student_name}",
        "samples": args.samples,
        "compile": args.compile,
    }
    for side in ("reference", "kdflow"):
        torch.manual_seed(0)
        teacher = build_model(teacher_name, (3, 32, 32), CLASSES).eval()
        student = build_model(student_name, (3, 32, 32), CLASSES)
        if side == "reference":
            rates = reference_epochs(teacher, student, images, labels, args)
        else:
            teacher = teacher.to(device, memory_format=torch.channels_last)
            student = student.to(device, memory_format=torch.channels_last)
            rates = kdflow_epochs(teacher, student, images, labels, args, device)
        results[f"{side}_samples_per_s"] = round(statistics.median(rates[1:]), 1)
    results["ratio"] = round(
        results["kdflow_samples_per_s"] / results["reference_samples_per_s"], 2
    )
    return results


def main() -> None:
    """Measure both pairs, print one JSON line each, then the two ratio lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (reference: CPU)")
    parser.add_argument("--samples", type=int, default=1024, help="training images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after a warm-up")
    parser.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--compile", action="store_true", help="compile kdflow's step (runtime.compile: true)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [measure(t, s, args) for t, s in PAIRS]
    for result in results:
        print(json.dumps(result), flush=True)
    for result in results:
        print(f"ratio {result['pair']}: {result['ratio']}")


if __name__ == "__main__":
    main()
