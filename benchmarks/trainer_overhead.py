"""How much slower is kdflow's `fit()` than a bare PyTorch training loop on the same work?

Both train the same freshly seeded model on the same synthetic data (N×1×40, 10 classes,
Gaussian class means plus noise) with SGD (momentum 0.9, weight decay 5e-4, constant lr),
cross-entropy, batches drawn from a per-epoch `randperm`. Each side first runs one warm-up
epoch that is not timed (first-call allocations, kernel selection, lazy imports), then the
timed epochs.

Fairness: `fit()` also evaluates on its validation split after every epoch and copies the
best weights. It gets a validation split of 10 samples (one per class), so that work is a
fixed few milliseconds per epoch; it is counted in the trainer's time because it is part of
what the trainer does per epoch, and it is too small to change the ratio's second digit on
4000 samples. `fit()` runs with no checkpoint path and no MLflow.

    .venv/bin/python benchmarks/trainer_overhead.py --epochs 3

The last line is `ratio trainer/bare: X.XX`, the trainer's throughput over the bare loop's
(1.00: no overhead; 0.90: the trainer is 10% slower).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from kdflow.config import OptimParams
from kdflow.data.tensors import Split
from kdflow.models import build_model
from kdflow.train.device import resolve_device
from kdflow.train.teacher import cross_entropy_objective
from kdflow.train.trainer import FitConfig, fit

INPUT_SHAPE = (1, 40)
NUM_CLASSES = 10


def synthetic_split(n: int, seed: int, device: torch.device) -> Split:
    """Return n samples around fixed per-class means; the labels cycle through the classes."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(NUM_CLASSES, *INPUT_SHAPE, generator=generator)
    y = torch.arange(n) % NUM_CLASSES
    x = means[y] + torch.randn(n, *INPUT_SHAPE, generator=generator)
    return Split(x.to(device), y.to(device), torch.arange(n, device=device))


def fresh_model(name: str, seed: int, device: torch.device) -> nn.Module:
    """Return model `name` initialised from `seed`, on `device`."""
    torch.manual_seed(seed)
    return build_model(name, INPUT_SHAPE, NUM_CLASSES).to(device)


def bare_loop(model: nn.Module, train: Split, optim: OptimParams, seed: int) -> float:
    """Train like a textbook PyTorch loop; return the seconds of the epochs after the warm-up."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
    )
    model.train()
    n = len(train)
    started = 0.0
    for epoch in range(optim.epochs + 1):  # epoch 0 is the warm-up
        if epoch == 1:
            _synchronize(train.x.device)
            started = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        order = order.to(train.x.device)
        for begin in range(0, n, optim.batch_size):
            index = order[begin : begin + optim.batch_size]
            loss = F.cross_entropy(model(train.x[index]), train.y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    _synchronize(train.x.device)
    return time.perf_counter() - started


def trainer_loop(
    model: nn.Module, train: Split, val: Split, optim: OptimParams, seed: int
) -> float:
    """Train with kdflow's fit(); return the seconds of the epochs after a one-epoch warm-up."""
    device = train.x.device

    def config(epochs: int) -> FitConfig:
        return FitConfig(
            optim=optim.model_copy(update={"epochs": epochs}), seed=seed, device=device
        )

    fit(model, cross_entropy_objective, train, val, config(1), num_classes=NUM_CLASSES)
    _synchronize(device)
    started = time.perf_counter()
    fit(model, cross_entropy_objective, train, val, config(optim.epochs), num_classes=NUM_CLASSES)
    _synchronize(device)
    return time.perf_counter() - started


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    """Parse the options, time both loops and print samples/s and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (default: %(default)s)")
    parser.add_argument("--model", default="resnet8", help="architecture (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128, help="default: %(default)s")
    parser.add_argument(
        "--samples", type=int, default=4000, help="training samples (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="timings per side; the median is reported"
    )
    parser.add_argument(
        "--device", default="cpu", help="auto | cpu | cuda | mps (default: %(default)s)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    train = synthetic_split(args.samples, args.seed, device)
    val = synthetic_split(NUM_CLASSES, args.seed + 1, device)  # one sample per class
    optim = OptimParams(
        epochs=args.epochs, batch_size=args.batch_size, lr=0.05, schedule="constant"
    )

    bare, trainer = [], []
    for _ in range(args.repeats):  # interleaved, so a noisy neighbour hits both sides alike
        model = fresh_model(args.model, args.seed, device)
        bare.append(bare_loop(model, train, optim, args.seed))
        model = fresh_model(args.model, args.seed, device)
        trainer.append(trainer_loop(model, train, val, optim, args.seed))

    samples = args.samples * args.epochs
    bare_rate = samples / statistics.median(bare)
    trainer_rate = samples / statistics.median(trainer)
    print(
        f"{args.model}, {args.samples} samples of {INPUT_SHAPE}, batch {args.batch_size}, "
        f"{args.epochs} timed epochs × {args.repeats}, torch {torch.__version__} on {device} "
        f"({torch.get_num_threads()} threads)"
    )
    print(f"bare loop:   {bare_rate:10.0f} samples/s  (median {statistics.median(bare):.2f} s)")
    print(
        f"kdflow fit:  {trainer_rate:10.0f} samples/s  (median {statistics.median(trainer):.2f} s)"
    )
    print(f"ratio trainer/bare: {trainer_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
