"""Helpers shared by the training tasks: per-iteration peak memory, bytes saved for backward, MMD."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from suite.measure import Stopwatch

__all__ = [
    "IterationPeak", "saved_for_backward_bytes", "mmd", "check_finite_loss", "evaluation_solver", "TrainingLoop",
    "SCALE",
]

SCALE = {"scale": True}  # json_schema_extra of a task parameter that a profile may change


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


class TrainingLoop:
    """The training iteration every task runs the same way, so their timings and memory mean the same.

    Per iteration: the cell's deadline, a timed forward (bytes kept for backward measured on the first
    one), a finite-loss check that names the iteration, a timed scaled backward, optional unscale + grad-norm
    clip, the optimizer step through the cell's GradScaler, `after_step` (schedules, clamps), then the
    per-iteration CUDA peak; `on_iteration_end(it)` runs outside the timed region (validation).
    """

    MAX_CONSECUTIVE_SKIPS = 20

    def __init__(self, ctx, optimizer, grad_clip: float | None = None, after_step=None, on_iteration_end=None):
        self.ctx, self.optimizer = ctx, optimizer
        self.grad_clip, self.after_step, self.on_iteration_end = grad_clip, after_step, on_iteration_end
        self.scaler = ctx.solver.grad_scaler(ctx.device)
        self.watch = Stopwatch(ctx.device)
        self.peak = IterationPeak(ctx.device)
        self.saved_mib = math.nan
        self.skip = getattr(ctx, "on_overflow", "fail") == "skip"
        self.skipped = 0
        self.consecutive_skips = 0
        self.retries = 0

    def _parameters(self):
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _iteration(self, it: int, forward: Callable[[], torch.Tensor]) -> None:
        ctx, watch = self.ctx, self.watch
        self.peak.start()
        with watch("iter_s"):
            with watch("fwd_s"), ctx.solver.autocast(ctx.device):
                if it == 0:
                    loss, nbytes = saved_for_backward_bytes(forward)
                    self.saved_mib = nbytes / 2**20
                else:
                    loss = forward()
            check_finite_loss(loss, it)
            with watch("bwd_s"):
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
            stats = ctx.solver.last_stats
            if stats is not None:
                self.retries += stats.n_retries
            if self.grad_clip is not None or self.skip:
                self.scaler.unscale_(self.optimizer)
            if self.skip and not self._gradients_finite():
                self._skip_step(it)
            else:
                self.consecutive_skips = 0
                if self.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self._parameters(), self.grad_clip)
                scale_before = self.scaler.get_scale() if self.scaler.is_enabled() else None
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if scale_before is not None and self.scaler.get_scale() < scale_before:
                    self.skipped += 1  # GradScaler found inf/NaN and skipped the step itself
                if self.after_step is not None:
                    self.after_step()
        self.peak.stop()

    def _gradients_finite(self) -> bool:
        grads = [p.grad for p in self._parameters() if p.grad is not None]
        if not grads:
            return True
        return bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())  # one host sync per iteration

    def _skip_step(self, it: int) -> None:
        """GradScaler-style: drop this step's gradients, keep training; too many in a row end the cell."""
        self.skipped += 1
        self.consecutive_skips += 1
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():
            self.scaler.update()  # lowers its scale, as after an overflow
        if self.consecutive_skips >= self.MAX_CONSECUTIVE_SKIPS:
            from suite.tasks._base import NonFiniteResult

            raise NonFiniteResult(f"{self.consecutive_skips} consecutive optimizer steps skipped for non-finite "
                                  f"gradients (at iteration {it})")

    def run(self, iterations: int, make_forward: Callable[[int], Callable[[], torch.Tensor]]) -> dict[str, float]:
        """Run the iterations; return fwd_s, bwd_s, iter_s (medians), total_s, iters_done,
        saved_for_backward_mib, and peak_mem_gib on CUDA (a CPU has no per-cell allocator peak)."""
        total = Stopwatch(self.ctx.device)
        with total("total_s"):
            for it in range(iterations):
                self.ctx.check_deadline()
                self._iteration(it, make_forward(it))
                if self.on_iteration_end is not None:
                    self.on_iteration_end(it)
                self.ctx.report_progress(0.9 * (it + 1) / iterations)
        if self.ctx.solver.last_stats is not None:
            self.ctx.stats.update(self.ctx.solver.last_stats.as_dict())
        metrics = {**self.watch.median(), "total_s": total.total()["total_s"], "iters_done": float(iterations),
                   "saved_for_backward_mib": self.saved_mib, "skipped_steps": float(self.skipped),
                   "scaler_retries": float(self.retries)}
        if self.ctx.device.type == "cuda":
            metrics["peak_mem_gib"] = self.peak.gib
        return metrics
