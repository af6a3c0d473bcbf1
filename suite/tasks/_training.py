"""Helpers shared by the training tasks: per-iteration peak memory, bytes saved for backward, MMD."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["IterationPeak", "saved_for_backward_bytes", "mmd", "check_finite_loss", "evaluation_solver"]


class IterationPeak:
    """max over iterations of CUDA max_memory_allocated, reset before each iteration (NaN on CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def stop(self) -> None:
        if self.device.type == "cuda":
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))

    @property
    def gib(self) -> float:
        return self.peak / 2**30 if self.device.type == "cuda" else math.nan


def saved_for_backward_bytes(forward: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run `forward` under saved-tensor hooks; return (its output, bytes autograd keeps for backward).

    Exact and device independent: the memory a backend's graph holds, which on CPU cannot be read from
    the allocator. Storages are counted once even when saved by several nodes.
    """
    seen: set[int] = set()
    total = 0

    def pack(x: torch.Tensor) -> torch.Tensor:
        nonlocal total
        storage = x.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = forward()
    return out, total


def mmd(x: torch.Tensor, y: torch.Tensor) -> float:
    """Biased MMD² estimate with the kernel exp(-|x - y|²), in float64."""
    x, y = x.double(), y.double()

    def k(a, b):
        return torch.exp(-torch.cdist(a, b) ** 2).mean()

    return float(k(x, x) + k(y, y) - 2 * k(x, y))


def check_finite_loss(loss: torch.Tensor, iteration: int) -> None:
    from suite.tasks._base import NonFiniteResult

    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteResult(f"training loss became {value} at iteration {iteration}")


def evaluation_solver(ctx):
    """The engine at full precision (fp32, or fp64 for fp64 cells) on the cell's tableau: evaluations that
    must be comparable across every backend and precision of a task use this one solver."""
    from suite.backends import get_backend

    full = "fp64" if ctx.precision.master == torch.float64 else "fp32"
    return get_backend("engine").solver(ctx.method, full, "none")
