"""Helpers shared by the training tasks: per-iteration peak memory, bytes saved for backward, MMD."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from suite.backends import get_backend
from suite.checkpoint import PREEMPTION, CellPreempted, capture_state, restore_state, rng_state, set_rng_state
from suite.measure import Stopwatch, synchronize
from suite.scaling import OnOverflow
from suite.tasks._base import NonFiniteResult

__all__ = [
    "IterationPeak", "saved_for_backward_bytes", "mmd", "check_finite_loss", "evaluation_solver", "TrainingLoop",
    "SCALE", "CurveSpec",
]

SCALE = {"scale": True}  # json_schema_extra of a task parameter that a profile may change


@dataclass(frozen=True)
class CurveSpec:
    """What a training task's learning curve measures, and how close to the fp32 engine row counts as there.

    The report's time to target (AlgoPerf's time-to-result): target = the fp32 engine row's last curve value
    ± `tolerance` (absolute, or a fraction of |target| when `relative`), on the side `direction` says is worse.
    """

    metric: str
    direction: Literal["lower", "higher"]
    tolerance: float
    relative: bool = False
    what: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "direction": self.direction, "tolerance": self.tolerance,
                "relative": self.relative, "what": self.what}


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
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteResult(f"training loss became {value} at iteration {iteration}")


def evaluation_solver(ctx):
    """The engine at full precision (fp32, or fp64 for fp64 cells) on the cell's tableau: evaluations that
    must be comparable across every backend and precision of a task use this one solver."""
    full = "fp64" if ctx.precision.master == torch.float64 else "fp32"
    return get_backend("engine").solver(ctx.method, full, "none")


class TrainingLoop:
    """The training iteration every task runs the same way, so their timings and memory mean the same.

    Per iteration: the cell's deadline, a timed forward (bytes kept for backward measured on the first
    one), a finite-loss check that names the iteration, a timed scaled backward, optional unscale + grad-norm
    clip, the optimizer step through the cell's GradScaler, `after_step` (schedules, clamps), then the
    per-iteration CUDA peak; `on_iteration_end(it)` runs outside the timed region (validation).

    Checkpoints (when the cell has a policy, `ctx.checkpoint`): `state` names the task's objects that the
    next iteration depends on (model, schedules, data generators, lists/dicts of results so far); the loop
    adds its optimizer, GradScaler, the solver's learned scaler, every RNG and its own counters and timing
    samples. A restored cell continues at the saved iteration with the same numbers it would have had.

    Learning curve (`curve` + `evaluate`): `evaluate(iterations_done)` returns the task's validation metric;
    it runs every `eval_every` iterations, after the last one, and (with `evaluate_at_start`) before the first,
    outside the timed training. Each point is (iteration, training seconds so far without any evaluation,
    value); the curve goes to `extra.curve` with the task's CurveSpec, and its cost to `timing.eval_s`.
    """

    MAX_CONSECUTIVE_SKIPS = 20

    def __init__(self, ctx, optimizer, grad_clip: float | None = None, after_step=None, on_iteration_end=None,
                 state: dict[str, Any] | None = None, curve: CurveSpec | None = None,
                 evaluate: Callable[[int], float] | None = None, eval_every: int | None = None,
                 evaluate_at_start: bool = True):
        if (curve is None) != (evaluate is None) or (evaluate is not None and (eval_every or 0) < 1):
            raise ValueError("a learning curve needs curve, evaluate and a positive eval_every together")
        self.curve_spec, self.evaluate, self.eval_every = curve, evaluate, eval_every
        self.evaluate_at_start = evaluate_at_start
        self.curve: list[tuple[int, float, float]] = []
        self.eval_s = 0.0
        self.ctx, self.optimizer = ctx, optimizer
        self.state = dict(state or {})
        self.grad_clip, self.after_step, self.on_iteration_end = grad_clip, after_step, on_iteration_end
        self.scaler = ctx.solver.grad_scaler(ctx.device)
        self.watch = Stopwatch(ctx.device)
        self.peak = IterationPeak(ctx.device)
        self.saved_mib = math.nan
        self.skip = getattr(ctx, "on_overflow", OnOverflow.FAIL) == OnOverflow.SKIP
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
            raise NonFiniteResult(f"{self.consecutive_skips} consecutive optimizer steps skipped for non-finite "
                                  f"gradients (at iteration {it})")

    def _objects(self) -> dict[str, Any]:
        return {**self.state, "optimizer": self.optimizer, "grad_scaler": self.scaler, "solver": self.ctx.solver}

    def _checkpoint(self, iterations_done: int, train_s: float) -> None:
        counters = {"saved_mib": self.saved_mib, "skipped": self.skipped, "consecutive_skips": self.consecutive_skips,
                    "retries": self.retries, "peak": self.peak.peak, "curve": list(self.curve),
                    "eval_s": self.eval_s}
        self.ctx.checkpoint.save({
            "iteration": iterations_done, "train_s": train_s, "samples": self.watch.samples, "counters": counters,
            "rng": rng_state(), "objects": {k: capture_state(v) for k, v in self._objects().items()},
            "restores": self.ctx.extra.get("checkpoint", {}).get("restores", 0),
        })

    def _restore(self) -> tuple[int, float]:
        """Load this cell's checkpoint if there is one: (first iteration to run, training seconds so far)."""
        policy = self.ctx.checkpoint
        if policy is None:
            return 0, 0.0
        started = time.perf_counter()
        payload = policy.load()
        if payload is None:
            return 0, 0.0
        objects = self._objects()
        missing = sorted(set(payload["objects"]) ^ set(objects))
        if missing:
            raise RuntimeError(f"checkpoint {policy.path} does not match this task's state (differs in "
                               f"{', '.join(missing)}); delete it to start the cell again")
        for name, obj in objects.items():
            restore_state(obj, payload["objects"][name])
        set_rng_state(payload["rng"])
        self.watch.samples = payload["samples"]
        counters = payload["counters"]
        self.saved_mib, self.skipped = counters["saved_mib"], counters["skipped"]
        self.consecutive_skips, self.retries, self.peak.peak = (
            counters["consecutive_skips"], counters["retries"], counters["peak"])
        self.curve = [tuple(point) for point in counters.get("curve", [])]
        self.eval_s = counters.get("eval_s", 0.0)
        synchronize(self.ctx.device)
        restore_s = time.perf_counter() - started
        info = self.ctx.extra.setdefault("checkpoint", {"restores": payload["restores"], "restored_at": [],
                                                        "restore_s": 0.0})
        info["restores"] += 1
        info["restored_at"].append(payload["iteration"])
        info["restore_s"] += restore_s
        self.ctx.timing["restore_s"] = info["restore_s"]
        if self.ctx.deadline is not None:
            self.ctx.deadline -= payload["train_s"]  # the budget counts the attempts before this one
        return payload["iteration"], payload["train_s"]

    def run(self, iterations: int, make_forward: Callable[[int], Callable[[], torch.Tensor]]) -> dict[str, float]:
        """Run the iterations (from a checkpoint when there is one); return fwd_s, bwd_s, iter_s (medians),
        total_s (training time, without checkpoint saves and restores), iters_done, saved_for_backward_mib,
        and peak_mem_gib on CUDA (a CPU has no per-cell allocator peak)."""
        first, train_s = self._restore()
        if first == 0 and self.evaluate is not None and self.evaluate_at_start:
            self._evaluate(0, train_s)
        PREEMPTION.armed = self.ctx.checkpoint is not None  # a stop request can be honoured from here on
        try:
            train_s = self._loop(first, iterations, train_s, make_forward)
        finally:
            PREEMPTION.armed = False
            if self.curve_spec is not None:  # also when the cell fails: the curve up to the failure is kept
                self.ctx.extra["curve"] = {
                    **self.curve_spec.as_dict(), "iteration": [p[0] for p in self.curve],
                    "train_s": [p[1] for p in self.curve], "value": [p[2] for p in self.curve]}
                self.ctx.timing["eval_s"] = self.eval_s
        if self.ctx.solver.last_stats is not None:
            self.ctx.stats.update(self.ctx.solver.last_stats.as_dict())
        metrics = {**self.watch.median(), "total_s": train_s, "iters_done": float(iterations),
                   "saved_for_backward_mib": self.saved_mib, "skipped_steps": float(self.skipped),
                   "scaler_retries": float(self.retries)}
        if self.ctx.device.type == "cuda":
            metrics["peak_mem_gib"] = self.peak.gib
        return metrics

    def _evaluate(self, iterations_done: int, train_s: float) -> None:
        """One learning-curve point, timed apart from training (a non-finite value is kept: it is a finding)."""
        synchronize(self.ctx.device)
        started = time.perf_counter()
        value = float(self.evaluate(iterations_done))
        synchronize(self.ctx.device)
        self.eval_s += time.perf_counter() - started
        self.curve.append((iterations_done, train_s, value))

    def _loop(self, first: int, iterations: int, train_s: float, make_forward) -> float:
        """Iterations `first`.. `iterations - 1`; returns the training seconds (this attempt's added)."""
        policy = self.ctx.checkpoint
        for it in range(first, iterations):
            synchronize(self.ctx.device)
            started = time.perf_counter()
            self.ctx.check_deadline()
            self._iteration(it, make_forward(it))
            if self.on_iteration_end is not None:
                self.on_iteration_end(it)
            synchronize(self.ctx.device)
            train_s += time.perf_counter() - started
            if self.evaluate is not None and ((it + 1) % self.eval_every == 0 or it + 1 == iterations):
                self._evaluate(it + 1, train_s)
            self.ctx.report_progress(0.9 * (it + 1) / iterations, iteration=it + 1, iterations=iterations,
                                     validation=self.curve[-1][2] if self.curve else None)
            if policy is not None and it + 1 < iterations and policy.due(it + 1):
                self._checkpoint(it + 1, train_s)
            if PREEMPTION.requested and policy is not None and it + 1 < iterations:
                raise CellPreempted(f"{PREEMPTION.signal_name} after iteration {it + 1}: checkpoint saved")
        return train_s
