"""KD training throughput of kdflow's trainer on CIFAR-shaped synthetic data, CPU or CUDA.

For each teacher→student pair it runs `fit()` with the `kd` method and a live teacher
forward (CIFAR training augments its inputs, so the teacher cannot be cached): the training
set held on the device as uint8, crop+flip of whole batches there (`CropFlip`), then
normalisation, bf16 autocast and channels_last on CUDA, optionally torch.compile (the
step as CUDA graphs). The first two epochs are a warm-up (and compile); the others are timed. Each
line projects a published-length run (240 epochs of 50,000 images) from the measured samples/s.

    python benchmarks/gpu_check.py                 # the device torch picks
    python benchmarks/gpu_check.py --compile       # runtime.compile: CUDA graphs on CUDA
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _cifar import CLASSES, synthetic_cifar, uint8_split
from torch._dynamo.utils import counters

from kdflow.config import OptimParams
from kdflow.losses import OutputShapes, build_method
from kdflow.models import build_model
from kdflow.train.augment import CropFlip
from kdflow.train.distill import DistillObjective
from kdflow.train.trainer import FitConfig, fit

PAIRS = [("resnet20", "resnet8"), ("resnet32x4", "resnet8x4")]


def measure(teacher_name: str, student_name: str, args: argparse.Namespace) -> dict:
    """Return samples/s of the timed KD epochs (after the warm-up) and the projected 240 epochs."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    train = uint8_split(*synthetic_cifar(args.samples, seed=0), device)
    val = uint8_split(*synthetic_cifar(512, seed=1), device)
    teacher = build_model(teacher_name, (3, 32, 32), CLASSES).to(device).eval()
    teacher = teacher.to(memory_format=torch.channels_last)
    student = build_model(student_name, (3, 32, 32), CLASSES).to(device)
    student = student.to(memory_format=torch.channels_last)
    with torch.no_grad():
        probe = train.batch(slice(0, 2))
        shapes = OutputShapes.measure(student.eval().forward_features(probe))
        teacher_shapes = OutputShapes.measure(teacher.forward_features(probe))
    method = build_method("kd", shapes, teacher_shapes, len(train)).to(device)
    objective = DistillObjective(method, teacher, total_epochs=args.epochs)
    times: list[float] = []

    def stamp(row: dict) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())

    optim = OptimParams(epochs=args.epochs, batch_size=args.batch_size, lr=0.05)
    cfg = FitConfig(optim=optim, seed=0, device=device, compile=args.compile)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fit(
        student,
        objective,
        train,
        val,
        cfg,
        num_classes=CLASSES,
        extra=method,
        augment=CropFlip(4),  # on raw pixels: pads with 0
        on_epoch_end=stamp,
    )
    timed = args.epochs - args.warmup
    samples_per_second = timed * len(train) / (times[-1] - times[args.warmup - 1])
    return {
        "pair": f"{teacher_name}->{student_name}",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "batch_size": args.batch_size,
        "compile": args.compile,
        "samples_per_second": round(samples_per_second, 1),
        "steps_timed": timed * -(-len(train) // args.batch_size),
        "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
        "peak_memory_mib": (
            round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None
        ),
        "first_epoch_seconds": round(times[0] - start, 2),
        "projected_240_epochs_50k_minutes": round(240 * 50_000 / samples_per_second / 60, 1),
    }


def main() -> None:
    """Measure every pair and print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="training images (default: 10000 on CUDA, 512 on CPU)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed epochs: with --compile the first compiles, the second recompiles once "
        "(the epoch number turns dynamic)",
    )
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    if args.samples is None:
        args.samples = 10_000 if args.device == "cuda" else 512
    if not 1 <= args.warmup < args.epochs:
        parser.error("--warmup must be at least 1 and less than --epochs")
    for teacher_name, student_name in PAIRS:
        counters.clear()
        print(json.dumps(measure(teacher_name, student_name, args)), flush=True)


if __name__ == "__main__":
    main()
