"""What caching the teacher's outputs saves: KD epochs with a live teacher vs the cache.

When training inputs are not augmented (the default MNIST-1D pipeline), the teacher's logits
and features are the same every epoch, so the distill stage computes them once
(`TeacherCache`) instead of running the teacher every step. This times `fit()` for the
default pair (resnet8 teacher → cnn3 student, 4,500 MNIST-1D-shaped samples, batch 64) with
the `kd` and `pkt` (feature) methods, both ways, after one untimed warm-up epoch. The cache's
one-off build time is counted on the cached side.

    .venv/bin/python benchmarks/teacher_cache.py
    .venv/bin/python benchmarks/teacher_cache.py --teacher resnet20 --epochs 5

The last lines are `speed-up <method>: X` (live seconds / cached seconds).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from kdflow.config import OptimParams
from kdflow.data.tensors import Split
from kdflow.models import build_model
from kdflow.train.distill import build_objective
from kdflow.train.trainer import FitConfig, fit

INPUT_SHAPE = (1, 40)
CLASSES = 10


def synthetic_signals(n: int, seed: int) -> Split:
    """Return n MNIST-1D-shaped samples (N×1×40) of ten Gaussian classes."""
    means = torch.randn(CLASSES, *INPUT_SHAPE, generator=torch.Generator().manual_seed(99))
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    return Split(means[y] + torch.randn(n, *INPUT_SHAPE, generator=generator), y, torch.arange(n))


def timed_fit(method_name: str, teacher, train: Split, args, cached: bool) -> float:
    """Return the seconds `args.epochs` timed KD epochs take (plus the cache build if cached)."""
    torch.manual_seed(0)
    student = build_model(args.student, INPUT_SHAPE, CLASSES)
    val = Split(train.x[:10], train.y[:10], train.ids[:10])
    stamps: list[float] = []
    start = time.perf_counter()
    objective = build_objective(
        method_name, [student], teacher, train, epochs=args.epochs + 1, cache_teacher=cached
    )
    cache_seconds = time.perf_counter() - start
    method = objective.method
    fit(
        student,
        objective,
        train,
        val,
        FitConfig(
            optim=OptimParams(epochs=args.epochs + 1, batch_size=64, lr=0.05),
            seed=0,
            device=torch.device("cpu"),
        ),
        num_classes=CLASSES,
        extra=method,
        on_epoch_end=lambda _: stamps.append(time.perf_counter()),
    )
    return stamps[-1] - stamps[0] + cache_seconds


def main() -> None:
    """Time both ways for each method; print JSON lines and the speed-ups."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet8")
    parser.add_argument("--student", default="cnn3")
    parser.add_argument("--samples", type=int, default=4500)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after a warm-up")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = build_model(args.teacher, INPUT_SHAPE, CLASSES).eval()
    train = synthetic_signals(args.samples, seed=1)
    lines = []
    for method_name in ("kd", "pkt"):
        live = timed_fit(method_name, teacher, train, args, cached=False)
        cached = timed_fit(method_name, teacher, train, args, cached=True)
        print(
            json.dumps(
                {
                    "pair": f"{args.teacher}->{args.student}",
                    "method": method_name,
                    "epochs": args.epochs,
                    "live_seconds": round(live, 3),
                    "cached_seconds": round(cached, 3),
                }
            ),
            flush=True,
        )
        lines.append(f"speed-up {method_name}: {live / cached:.2f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
