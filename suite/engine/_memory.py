"""What the forward keeps for the backward, and how the backward gets each step's stages back: the memory knob.

- "states" (default): the forward keeps the trajectory in the storage dtype; the backward re-evaluates each
  step's stages from its stored state (s more evaluations of f per step: the least memory per step);
- "stages": the forward records every stage evaluation with autograd (its activations, in the dtype f
  computes in), so the backward evaluates nothing again: the most memory, the least time;
- "checkpoint:K" ("checkpoint" alone: K = ⌈√n⌉): the forward keeps every K-th state in the accumulation
  dtype; the backward re-runs each segment's forward from its checkpoint, recording it, and then walks the
  segment back: O(n/K) states plus K steps of activations, about one more forward than "stages".

All three take the same steps from the same quantized states (a checkpointed segment restarts from the
high-precision state, not its 16-bit copy), so their gradients agree to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from suite.deadline import unbind_checked
from suite.engine._memory_setting import MEMORY_SETTINGS, MemoryPlan, parse_memory
from suite.engine._stepping import Grid, Solve, evaluate_stages

__all__ = ["MemoryPlan", "MEMORY_SETTINGS", "parse_memory", "Recorded", "record_step", "Recompute", "Kept",
           "Segments"]

@dataclass
class Recorded:
    """One step's stages evaluated with autograd recording: the state leaves they start from, the stage
    outputs K_j (per component), and the time leaves (t_i, h) when t needs a gradient."""

    base: list[torch.Tensor]
    ks: list[list[torch.Tensor]] | None  # None: freed (the state alone is kept)
    t_leaves: tuple[torch.Tensor, torch.Tensor] | None


def time_leaves(problem: Solve, t: torch.Tensor, grid: Grid, i: int):
    """t_i and h as leaves, and the stage times and h·a_jl as functions of them (only when t needs a
    gradient). Their *values* are exactly the forward's (the grid's times and host coefficients): each is
    the forward's value plus a zero that carries the graph, so every memory setting evaluates f at the
    same points and the time gradient belongs to the steps the forward took."""
    acc = problem.accumulate
    c, a, _ = problem.tableau.floats()
    pair = t[i: i + 2].detach().to(acc)
    t_i = pair[0].detach().requires_grad_(True)
    h = (pair[1] - pair[0]).detach().requires_grad_(True)
    with torch.enable_grad():
        times = []
        for cj, fixed in zip(c, grid.stage_times(i)):
            moving = t_i + cj * h
            times.append(fixed + (moving - moving.detach()).to(fixed.dtype))
        deltas: list[torch.Tensor | None] = [None] * len(grid.coefs[i])
        for j, terms in enumerate(problem.plan.stage_terms):
            for l, col in terms:
                moving = h * a[j][l]
                deltas[col] = moving - moving.detach()
    return (t_i, h), times, deltas


def record_step(problem: Solve, calls: Sequence[Callable], base_values: Sequence[torch.Tensor], grid: Grid, i: int,
                t: torch.Tensor | None, first: list[torch.Tensor] | None = None) -> Recorded:
    """Evaluate step i's stages from `base_values` (the stored state, in the field's state dtype) with
    autograd recording on fresh leaves; with `t`, the times are functions of (t_i, h) leaves."""
    base = [x.detach().requires_grad_(True) for x in base_values]
    t_leaves, times, deltas = None, grid.stage_times(i), None
    if t is not None:
        t_leaves, times, deltas = time_leaves(problem, t, grid, i)
    with torch.enable_grad():
        ks = evaluate_stages(problem, calls, base, times, grid.coefs[i], first=first, deltas=deltas)
    return Recorded(base, ks, t_leaves)


def advance(problem: Solve, y_high: list[torch.Tensor], ks: list[list[torch.Tensor]], coefs: Sequence[float]) -> None:
    """y_H ← y_H + Σ_j (h b_j) K_j in the accumulation dtype, exactly as the forward does it."""
    for j, col in enumerate(problem.plan.b_columns):
        if col is not None:
            for k, y in enumerate(y_high):
                stage = ks[j][k]
                y.add_(stage.detach() if stage.requires_grad else stage, alpha=coefs[col])


def quantized(problem: Solve, y_high: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The state the forward steps from: Q_L(y_H) in the storage dtype, then in the field's state dtype."""
    storage, state_dtype = problem.precision.storage, problem.field.state_dtype
    out = []
    for y in y_high:
        q = y.to(storage, copy=True)  # a copy even when storage is the accumulation dtype: y_H moves on
        out.append(q if storage == state_dtype else q.to(state_dtype))
    return out


# ---------------------------------------------------------------------------------------------- sources
class Recompute:
    """memory="states": each step re-evaluated from its stored state when the backward reaches it."""

    retains = False

    def __init__(self, problem: Solve, calls, grid: Grid, stored: list[torch.Tensor], t) -> None:
        self.problem, self.calls, self.grid, self.t = problem, calls, grid, t
        self.views = [unbind_checked(x) for x in stored]
        self.stored = stored
        self.state_dtype = problem.field.state_dtype
        self.shapes = [x.shape[1:] for x in stored]
        self.device = stored[0].device

    def step(self, i: int) -> Recorded:
        base = [v[i] if v[i].dtype == self.state_dtype else v[i].to(self.state_dtype) for v in self.views]
        return record_step(self.problem, self.calls, base, self.grid, i, self.t)

    def release(self, i: int) -> None:
        pass

    def finite(self) -> torch.Tensor:
        return torch.stack([torch.isfinite(x).all() for x in self.stored]).all()


class Kept:
    """memory="stages": every step as the forward recorded it. Once the backward is past a step its graph is
    freed and only its state kept, so a second backward (retain_graph=True, gradcheck) re-evaluates it as
    memory="states" would: the same values, the same gradients."""

    retains = True  # a dynamic-scaling retry takes the same step's VJP again

    def __init__(self, problem: Solve, calls, grid: Grid, steps: list[Recorded], t) -> None:
        self.problem, self.calls, self.grid, self.t = problem, calls, grid, t
        self.steps = steps
        self.shapes = [x.shape for x in steps[0].base]
        self.device = steps[0].base[0].device

    def step(self, i: int) -> Recorded:
        recorded = self.steps[i]
        if recorded.ks is None:
            recorded = record_step(self.problem, self.calls, recorded.base, self.grid, i, self.t)
            self.problem.stats.nfe_backward += self.problem.tableau.n_stages
            self.steps[i] = recorded
        return recorded

    def release(self, i: int) -> None:
        self.steps[i] = Recorded([x.detach() for x in self.steps[i].base], None, None)

    def finite(self) -> torch.Tensor:
        return torch.stack([torch.isfinite(x).all() for r in self.steps for x in r.base]).all()


class Segments:
    """memory="checkpoint:K": a segment's forward re-run from its checkpoint, recorded, when the backward
    first reaches one of its steps; each step released once the backward is past it."""

    retains = True

    def __init__(self, problem: Solve, calls, grid: Grid, checkpoints: list[list[torch.Tensor]], every: int,
                 n_steps: int, t) -> None:
        self.problem, self.calls, self.grid, self.t = problem, calls, grid, t
        self.checkpoints, self.every, self.n_steps = checkpoints, every, n_steps
        self.cache: dict[int, Recorded] = {}
        self.shapes = [x.shape for x in checkpoints[0]]
        self.device = checkpoints[0][0].device

    def step(self, i: int) -> Recorded:
        if i not in self.cache:
            self._replay(i // self.every)
        return self.cache[i]

    def _replay(self, segment: int) -> None:
        start = segment * self.every
        y_high = [x.clone() for x in self.checkpoints[segment]]
        for i in range(start, min(start + self.every, self.n_steps)):
            recorded = record_step(self.problem, self.calls, quantized(self.problem, y_high), self.grid, i, self.t)
            self.cache[i] = recorded
            self.problem.stats.nfe_backward += self.problem.tableau.n_stages
            advance(self.problem, y_high, recorded.ks, self.grid.coefs[i])

    def release(self, i: int) -> None:
        self.cache.pop(i, None)

    def finite(self) -> torch.Tensor:
        return torch.stack([torch.isfinite(x).all() for c in self.checkpoints for x in c]).all()
