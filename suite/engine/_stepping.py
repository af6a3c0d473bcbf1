"""What the forward and the backward share: the solve's description, the tableau's sparsity plan, the
per-step data (host scalars and device stage times), and the evaluation of a step's stages."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from suite.deadline import check_deadline, unbind_checked
from suite.engine._field import Binding, FieldCall
from suite.engine._memory_setting import MemoryPlan
from suite.engine._scaler import AdjointScaler, OnFailure
from suite.engine._stats import SolveStats
from suite.engine._step import StateSpec
from suite.engine._tableau import ButcherTableau
from suite.precision import Precision, tf32_mode

__all__ = ["Solve", "Plan", "Grid", "evaluate_stages"]


@dataclass
class Solve:
    """Everything about one solve that is not a tensor input."""

    field: FieldCall
    spec: StateSpec
    tableau: ButcherTableau
    precision: Precision
    accumulate: torch.dtype
    scaler: AdjointScaler | None
    stats: SolveStats
    output: str
    on_failure: OnFailure
    grad_wanted: bool
    device: torch.device
    memory: MemoryPlan = field(default_factory=lambda: MemoryPlan("states"))
    plan: Plan = field(init=False)
    grid: Grid = field(init=False)
    binding: Binding | None = field(default=None, init=False)  # the forward's, until it has run
    first_stage: list[torch.Tensor] | None = field(default=None, init=False)

    def modes(self) -> contextlib.ExitStack:
        """The numerical mode, whatever the caller's autocast/TF32 state (autocast is the field's business)."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(self.device.type, enabled=False))
        stack.enter_context(tf32_mode(self.precision.tf32))
        return stack


@dataclass
class Plan:
    """The tableau's sparsity: which a_jl and b_j are nonzero, and where their h-multiples sit in the table."""

    stage_terms: list[list[tuple[int, int]]]  # per stage j: (l, column of h·a_jl)
    b_columns: list[int | None]  # per stage: column of h·b_j in the table (None when b_j = 0)
    b_groups: list[tuple[int, list[int]]]  # (column, stages) for each distinct nonzero b value
    n_columns: int
    _constants: dict = field(default_factory=dict)

    @classmethod
    @functools.lru_cache(maxsize=64)
    def of(cls, tableau: ButcherTableau) -> Plan:
        """One plan per tableau, shared by every solve (so its device constants are made once)."""
        return cls._build(tableau)

    @classmethod
    def _build(cls, tableau: ButcherTableau) -> Plan:
        c, a, b = tableau.floats()
        col = 0
        stage_terms = []
        for row in a:
            terms = []
            for l, coef in enumerate(row):
                if coef != 0.0:
                    terms.append((l, col))
                    col += 1
            stage_terms.append(terms)
        groups: dict[float, list[int]] = {}
        for j, bj in enumerate(b):
            if bj != 0.0:
                groups.setdefault(bj, []).append(j)
        b_columns: list[int | None] = [None] * len(b)
        b_groups = []
        for stages in groups.values():
            b_groups.append((col, stages))
            for j in stages:
                b_columns[j] = col
            col += 1
        return cls(stage_terms, b_columns, b_groups, col)

    def grid(self, tableau: ButcherTableau, t: torch.Tensor, acc: torch.dtype, time_dtype: torch.dtype) -> Grid:
        """Per-step scalars on the host (one read of t per solve) and the stage times on the device."""
        c, a, b = tableau.floats()
        weights = [a[j][l] for j, terms in enumerate(self.stage_terms) for l, _ in terms]
        weights += [b[stages[0]] for _, stages in self.b_groups]
        points = t.detach().double().tolist()
        coefs = _StepCoefficients(points, weights)
        key = (t.device, acc)
        if key not in self._constants:  # once per device and dtype: no host-to-device copy per solve
            self._constants[key] = torch.tensor(c, dtype=acc, device=t.device)
        t_acc = t.detach().to(acc)
        h = (t_acc[1:] - t_acc[:-1]).unsqueeze(1)  # stage times t + c h in the accumulation dtype ...
        times = (t_acc[:-1].unsqueeze(1) + h * self._constants[key]).to(time_dtype)  # ... cast where f gets them
        return Grid(coefs=coefs, times=unbind_checked(times.reshape(-1)), n_stages=len(c))


class _StepCoefficients(Sequence):
    """Per step, h·w for every tableau weight w, made when a step asks for them (a million-step grid would
    otherwise spend seconds building them before its first step, which is where the deadline is checked)."""

    def __init__(self, points: list[float], weights: list[float]) -> None:
        self.points, self.weights = points, weights

    def __len__(self) -> int:
        return len(self.points) - 1

    def __getitem__(self, i: int) -> list[float]:
        h = self.points[i + 1] - self.points[i]
        return [h * w for w in self.weights]


@dataclass
class Grid:
    """One solve's step data: coefficients as host scalars, stage times as 0-d device tensors for f."""

    coefs: Sequence[list[float]]  # per step: h·a_jl (in Plan column order), then h·b per distinct b
    times: Sequence[torch.Tensor]  # N·s views, step-major
    n_stages: int

    def stage_times(self, i: int) -> Sequence[torch.Tensor]:
        return self.times[i * self.n_stages: (i + 1) * self.n_stages]


def evaluate_stages(problem: Solve, calls: Sequence[Callable], base: list[torch.Tensor], times: Sequence[torch.Tensor],
            coefs: Sequence[float], first: list[torch.Tensor] | None = None,
            deltas: Sequence[torch.Tensor | None] | None = None) -> list[list[torch.Tensor]]:
    """K_j for every stage from the base state (one list of components per stage); `calls` has one entry
    per stage (the backward's per-stage parameter leaves) or a single one. `first`: the first stage,
    already evaluated (the forward's first step: the probe's output); the step's outputs are then checked
    against the state's structure. `deltas`: per coefficient, a zero carrying its dependence on the step
    size (when t needs a gradient), so the values stay the forward's."""
    check_deadline()  # once per step, in the forward, the backward and every recomputation
    spec, plan = problem.spec, problem.plan
    per_stage = len(calls) > 1
    ks: list[list[torch.Tensor]] = []
    for j, terms in enumerate(plan.stage_terms):
        if terms:
            stage = []
            for comp, y in enumerate(base):
                for l, col in terms:
                    y = torch.add(y, ks[l][comp], alpha=coefs[col])
                    if deltas is not None and deltas[col] is not None:
                        y = y + ks[l][comp] * deltas[col].to(y.dtype)
                stage.append(y)
        else:
            stage = base
        if first is not None and j == 0:
            ks.append(first)
            continue
        call = calls[j] if per_stage else calls[0]
        out = call(times[j], spec.pack(stage))
        ks.append(spec.unpack(out, f"func output at stage {j}") if first is not None else
                  (list(out) if spec.is_tuple else [out]))
    return ks
