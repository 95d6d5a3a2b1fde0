"""Device choice, seeding, determinism and the compiled training step."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from kdflow.errors import KdflowError

T = TypeVar("T")


def resolve_device(name: str) -> torch.device:
    """Return the torch device for `runtime.device` (auto → cuda, mps, cpu)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise KdflowError(
            "runtime.device is 'cuda' but no CUDA GPU is visible to torch "
            f"(torch {torch.__version__}); set runtime.device: auto or cpu"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise KdflowError("runtime.device is 'mps' but MPS is not available; use auto or cpu")
    return torch.device(name)


def configure_runtime(
    seed: int, deterministic: bool, threads: int = 0, device: torch.device | None = None
) -> None:
    """Seed python, numpy and torch; make kernels deterministic when asked."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    # cudnn.benchmark picks kernels by timing, so results would vary run to run.
    torch.backends.cudnn.benchmark = False
    # CPU kernels are deterministic for a fixed thread count; the global switch only guards
    # accelerator kernels, and turning it on imports torch._inductor (~2.5 s per stage).
    if deterministic and device is not None and device.type != "cpu":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True


def compile_step(objective: Callable[..., T], device: torch.device) -> Callable[..., T]:
    """Return the training step `objective` compiled for `device` (`runtime.compile`).

    At the published batch size (64) a CIFAR ResNet step on a GPU is bound by launching
    hundreds of small kernels, not by arithmetic. On CUDA the whole objective (the student's
    forward, a live teacher's and the loss) is compiled with "reduce-overhead", which replays
    its forward and its backward as one CUDA graph each. On the CPU the same step is compiled
    with fused kernels and no graphs (both measured in README "Performance").
    """
    if device.type not in ("cuda", "cpu"):
        raise KdflowError(
            f"runtime.compile supports cuda and cpu, not {device.type}; set runtime.compile: false"
        )
    if device.type == "cpu":
        _require_cpp_compiler()
    return compiled_step(objective, graphs=device.type == "cuda")


def _require_cpp_compiler() -> None:
    # Inductor builds its CPU kernels with a C++ compiler; without one it fails at the first
    # step with a long traceback, after the stage has loaded its data.
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        raise KdflowError(
            "runtime.compile on the CPU needs a C++ compiler: install g++ (or point CXX at "
            "one), or set runtime.compile: false"
        ) from None


def compiled_step(objective: Callable[..., T], graphs: bool = True) -> Callable[..., T]:
    """Return `objective` under torch.compile, with static tensor shapes.

    `graphs` compiles with "reduce-overhead" (CUDA graphs on a GPU), and each call marks
    where a training step begins. The last, smaller batch of an epoch gets its own graph
    rather than a dynamic-shape one; the epoch number turns dynamic when it first changes. A
    run compiles four times, not once per epoch.
    """

    def traced(*args: Any) -> T:
        return objective(*args)

    compiled = torch.compile(traced, mode="reduce-overhead" if graphs else None)

    def step(*args: Any) -> T:
        if graphs:  # the previous step's graph outputs are consumed: their memory may be reused
            torch.compiler.cudagraph_mark_step_begin()
        for arg in args:
            if isinstance(arg, torch.Tensor):
                torch._dynamo.mark_static(arg)
        return compiled(*args)

    return step
