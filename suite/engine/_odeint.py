"""Fixed-grid mixed-precision `odeint` with a discrete-adjoint backward pass.

Forward ("quantize, accumulate high"): per step, the stages K_j = f(t + c_j h, Y_j) run on the *stored*
state Q_L(y_i) (so the backward can rebuild exactly the step the forward took) and are accumulated into the
high-precision state, y_H ← y_H + Σ_j (h b_j) K_j; only Q_L(y_H) is stored for the backward.

Backward (discretize-then-optimize): per step, rebuild the stages from the stored state and take one
vector-Jacobian product with the adjoint (scaled per step into the low dtype's range under
scaling="dynamic"): a ← a + (∂Φ/∂y)ᵀa, g ← g + (∂Φ/∂θ)ᵀa. The gradient is the exact gradient of the discrete
forward map (up to rounding), for any tableau.

Where the solver's own work goes (it is launch-bound on a GPU, so it is counted in operations per step):
the grid is read to the host once per solve, so every h·a_jl and h·b_j is a Python scalar folded into the
operation that uses it (`add(..., alpha=)`), and the stage times are made on the device in the accumulation
dtype, once; in the backward every stage runs on its own parameter leaves, so autograd returns one gradient
per stage and tensor instead of summing them tensor by tensor, and the sums are one `_foreach` operation
per stage into a flat fp32 buffer: the count does not grow with the number of parameter tensors.

scaling="dynamic": the backward runs in rounds that the host launches without looking; an attempt that
overflows freezes the rest of its round, and the host, reading the scaler once per round, retries that
step with the scale halved. Without overflow that is one host synchronization per backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.autograd.function import once_differentiable

from suite.engine._field import POLICIES, Binding, FieldCall
from suite.engine._scaler import GIVE_UP_REASONS, AdjointScaler, ScalerExhausted
from suite.engine._stats import SolveStats
from suite.engine._step import StateSpec
from suite.engine._tableau import ButcherTableau, get_method
from suite.precision import Precision, get_precision, tf32_mode

__all__ = ["odeint", "ENGINE_SCALINGS", "OUTPUTS", "ON_FAILURE"]

ENGINE_SCALINGS = ("none", "dynamic")
OUTPUTS = ("accumulate", "storage", "final")
ON_FAILURE = ("raise", "nonfinite")
_ACCUMULATE = {"fp32": torch.float32, "fp64": torch.float64}


@dataclass
class _Solve:
    """Everything about one solve that is not a tensor input."""

    field: FieldCall
    spec: StateSpec
    tableau: ButcherTableau
    precision: Precision
    accumulate: torch.dtype
    scaler: AdjointScaler | None
    stats: SolveStats
    output: str
    on_failure: str
    grad_wanted: bool
    device: torch.device
    plan: _Plan = field(init=False)

    def modes(self) -> contextlib.ExitStack:
        """The numerical mode, whatever the caller's autocast/TF32 state (autocast is the field's business)."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(self.device.type, enabled=False))
        stack.enter_context(tf32_mode(self.precision.tf32))
        return stack


@dataclass
class _Plan:
    """The tableau's sparsity: which a_jl and b_j are nonzero, and where their h-multiples sit in the table."""

    stage_terms: list[list[tuple[int, int]]]  # per stage j: (l, column of h·a_jl)
    b_columns: list[int | None]  # per stage: column of h·b_j in the table (None when b_j = 0)
    b_groups: list[tuple[int, list[int]]]  # (column, stages) for each distinct nonzero b value
    n_columns: int
    _constants: dict = field(default_factory=dict)

    @classmethod
    def of(cls, tableau: ButcherTableau) -> _Plan:
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

    def grid(self, tableau: ButcherTableau, t: torch.Tensor, acc: torch.dtype, time_dtype: torch.dtype) -> _Grid:
        """Per-step scalars on the host (one read of t per solve) and the stage times on the device."""
        c, a, b = tableau.floats()
        weights = [a[j][l] for j, terms in enumerate(self.stage_terms) for l, _ in terms]
        weights += [b[stages[0]] for _, stages in self.b_groups]
        points = t.detach().double().tolist()
        steps = [points[i + 1] - points[i] for i in range(len(points) - 1)]
        coefs = [[h * w for w in weights] for h in steps]
        key = (t.device, acc)
        if key not in self._constants:  # once per device and dtype: no host-to-device copy per solve
            self._constants[key] = torch.tensor(c, dtype=acc, device=t.device)
        t_acc = t.detach().to(acc)
        h = (t_acc[1:] - t_acc[:-1]).unsqueeze(1)  # stage times t + c h in the accumulation dtype ...
        times = (t_acc[:-1].unsqueeze(1) + h * self._constants[key]).to(time_dtype)  # ... cast where f gets them
        return _Grid(coefs=coefs, times=times.reshape(-1).unbind(), n_stages=len(c))


@dataclass
class _Grid:
    """One solve's step data: coefficients as host scalars, stage times as 0-d device tensors for f."""

    coefs: list[list[float]]  # per step: h·a_jl (in _Plan column order), then h·b per distinct b
    times: Sequence[torch.Tensor]  # N·s views, step-major
    n_stages: int

    def stage_times(self, i: int) -> Sequence[torch.Tensor]:
        return self.times[i * self.n_stages: (i + 1) * self.n_stages]


def _stages(problem: _Solve, calls: Sequence[Callable], base: list[torch.Tensor], times: Sequence[torch.Tensor],
            coefs: Sequence[torch.Tensor], first_call: bool = False) -> list[list[torch.Tensor]]:
    """K_j for every stage from the base state (one list of components per stage); `calls` has one entry
    per stage (the backward's per-stage parameter leaves) or a single one."""
    spec, plan = problem.spec, problem.plan
    per_stage = len(calls) > 1
    ks: list[list[torch.Tensor]] = []
    for j, terms in enumerate(plan.stage_terms):
        if terms:
            stage = []
            for comp, y in enumerate(base):
                for l, col in terms:
                    coef = coefs[col]
                    y = torch.addcmul(y, ks[l][comp], coef) if isinstance(coef, torch.Tensor) else \
                        torch.add(y, ks[l][comp], alpha=coef)
                stage.append(y)
        else:
            stage = base
        packed = spec.pack(stage)
        call = calls[j] if per_stage else calls[0]
        if first_call and j == 0:
            out = problem.field.checked_call(call, times[j], packed, problem.grad_wanted)
        else:
            out = call(times[j], packed)
        ks.append(spec.unpack(out, f"func output at stage {j}") if first_call else
                  (list(out) if spec.is_tuple else [out]))
    return ks


class _OdeintFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: _Solve, t: torch.Tensor, *tensors: torch.Tensor):
        n_y = len(problem.spec.shapes)
        ys = tensors[:n_y]
        n_steps = t.shape[0] - 1
        acc, storage = problem.accumulate, problem.precision.storage
        state_dtype = problem.field.state_dtype
        stored = [torch.empty((n_steps + 1, *y.shape), dtype=storage, device=y.device) for y in ys]
        final_only = problem.output == "final"
        separate_output = problem.output == "accumulate" and storage != acc
        outputs = [torch.empty((n_steps + 1, *y.shape), dtype=acc, device=y.device) for y in ys] \
            if separate_output else stored
        binding: Binding = problem.field.bind(for_backward=False)
        with problem.modes(), binding.context:
            grid = problem.plan.grid(problem.tableau, t, acc, state_dtype)
            y_high = [y.detach().to(acc, copy=True) for y in ys]
            stored_views = [x.unbind(0) for x in stored]
            output_views = [o.unbind(0) for o in outputs] if separate_output else None
            for k in range(n_y):
                stored_views[k][0].copy_(y_high[k])
                if output_views:
                    output_views[k][0].copy_(y_high[k])
            b_columns = problem.plan.b_columns
            for i in range(n_steps):
                base = [sv[i] if storage == state_dtype else sv[i].to(state_dtype) for sv in stored_views]
                coefs = grid.coefs[i]
                ks = _stages(problem, binding.calls, base, grid.stage_times(i), coefs,
                             first_call=i == 0 and not problem.field.checked)
                for j, col in enumerate(b_columns):
                    if col is not None:
                        for k in range(n_y):
                            y_high[k].add_(ks[j][k], alpha=coefs[col])
                for k in range(n_y):
                    stored_views[k][i + 1].copy_(y_high[k])
                    if output_views:
                        output_views[k][i + 1].copy_(y_high[k])
        binding.write_back()
        problem.stats.n_steps = n_steps
        problem.stats.nfe_forward += n_steps * problem.tableau.n_stages
        ctx.problem = problem
        ctx.grid = grid
        ctx.save_for_backward(t, *stored)
        ctx.input_dtypes = [x.dtype for x in tensors]
        ctx.final_only = final_only
        if final_only:
            return tuple(y_high)
        return tuple(stored if not separate_output else outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_outputs: torch.Tensor | None):
        problem: _Solve = ctx.problem
        t, *stored = ctx.saved_tensors
        n_y = len(stored)
        want_t = ctx.needs_input_grad[1]
        binding = problem.field.bind(for_backward=True, n_stages=problem.tableau.n_stages)
        with problem.modes(), binding.context:
            grads_y, grads_p, grad_t = _backward(problem, binding, ctx.grid, t, stored, list(grad_outputs), want_t,
                                                 ctx.final_only)
        out_y = [g.to(dt) for g, dt in zip(grads_y, ctx.input_dtypes[:n_y])]
        out_p = [g.to(dt) if g is not None else None for g, dt in zip(grads_p, ctx.input_dtypes[n_y:])]
        return (None, grad_t.to(t.dtype) if grad_t is not None else None, *out_y, *out_p)


# ---------------------------------------------------------------------------------------------- backward
@dataclass
class _Adjoint:
    """The backward's running sums: the adjoint per state component and the flat parameter gradient."""

    a: list[torch.Tensor]
    flat: torch.Tensor | None
    views: list[torch.Tensor]
    step_flat: torch.Tensor | None = None
    step_views: list[torch.Tensor] = field(default_factory=list)


def _flat_buffer(leaves: list[torch.Tensor], dtype: torch.dtype) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """One zeroed buffer for all gradients, and a view of it per tensor."""
    if not leaves:
        return None, []
    flat = torch.zeros(sum(x.numel() for x in leaves), dtype=dtype, device=leaves[0].device)
    views, offset = [], 0
    for x in leaves:
        views.append(flat[offset: offset + x.numel()].view(x.shape))
        offset += x.numel()
    return flat, views


def _backward(problem: _Solve, binding: Binding, grid: _Grid, t, stored, grad_outputs, want_t, final_only):
    acc = problem.accumulate
    n_steps = t.shape[0] - 1
    leaves = [*binding.stage_leaves[0], *binding.shared_leaves]  # one per differentiable input
    flat, views = _flat_buffer(leaves, acc)
    finals = [g if final_only else (g[n_steps] if g is not None else None) for g in grad_outputs]
    adjoint = _Adjoint(
        a=[(g.to(acc, copy=True) if g is not None else torch.zeros(s.shape[1:], dtype=acc, device=s.device))
           for g, s in zip(finals, stored)],
        flat=flat, views=views,
    )
    if final_only:  # no gradient arrives at the intermediate times
        grad_outputs = [None] * len(grad_outputs)
    grad_t = torch.zeros(n_steps + 1, dtype=acc, device=t.device) if want_t else None
    step = _Step(problem, binding, grid, stored, grad_outputs, t if want_t else None, grad_t)
    if problem.scaler is None:
        _plain_loop(step, adjoint, n_steps)
    else:
        _dynamic_loop(step, adjoint, n_steps)
    problem.stats.backward_done = True
    # a parameter the field never reached gets a zero gradient (torchdiffeq returns zeros too)
    return adjoint.a, list(adjoint.views), grad_t


class _Step:
    """One step's vector-Jacobian product, on host-indexed steps."""

    def __init__(self, problem: _Solve, binding: Binding, grid: _Grid, stored, grad_outputs, t, grad_t) -> None:
        self.problem, self.binding, self.grid = problem, binding, grid
        self.stored, self.grad_outputs = stored, grad_outputs
        self.t, self.grad_t = t, grad_t
        self.state_dtype = problem.field.state_dtype
        self.storage = problem.precision.storage
        self.n_y = len(stored)
        # inputs of each step's VJP after the state: every stage's own leaves, then the shared ones
        self.leaves = [x for stage in binding.stage_leaves for x in stage] + list(binding.shared_leaves)
        self.n_stages = len(binding.stage_leaves)
        self.n_stage_leaves = len(binding.stage_leaves[0])
        self.stored_views = [x.unbind(0) for x in stored]
        self.grad_views = [g.unbind(0) if g is not None else None for g in grad_outputs]
        # grad outputs h·b_j·a are written into these compute-dtype buffers (one per component and distinct b)
        self.seed_buffers = [[torch.empty(x.shape[1:], dtype=self.state_dtype, device=x.device)
                              for _ in problem.plan.b_groups] for x in stored]

    def vjp(self, i: int, a: list[torch.Tensor], scale: torch.Tensor | None):
        """VJPs (scaled by `scale`) of Σ_j h b_j K_j with the adjoint a: (d/dy per component, grouped d/dleaves,
        the incoming output gradient at t_i per component, the t-part when t needs a gradient)."""
        problem, plan = self.problem, self.problem.plan
        base = [v[i] if self.storage == self.state_dtype else v[i].to(self.state_dtype) for v in self.stored_views]
        base = [x.detach().requires_grad_(True) for x in base]
        coefs, times = self.grid.coefs[i], self.grid.stage_times(i)
        t_leaves = None
        if self.t is not None:
            t_leaves, times, coefs = self._time_leaves(i, coefs)
        with torch.enable_grad():
            ks = _stages(problem, self.binding.calls, base, times, coefs)
        outputs, seeds = [], []
        for k in range(self.n_y):
            scaled = a[k] if scale is None else a[k] * scale
            for g, (col, stages) in enumerate(plan.b_groups):
                seed = torch.mul(scaled, self.grid.coefs[i][col], out=self.seed_buffers[k][g])
                for j in stages:
                    if ks[j][k].requires_grad:
                        outputs.append(ks[j][k])
                        seeds.append(seed)
        inputs = [*base, *self.leaves] + (list(t_leaves) if t_leaves is not None else [])
        if outputs:
            vjps = list(_vjp(outputs, inputs, seeds))
        else:  # no stage output depends on anything differentiable: every VJP is zero
            vjps = [None] * len(inputs)
        problem.stats.nfe_backward += problem.tableau.n_stages
        problem.stats.n_backward_attempts += 1
        n_l = len(self.leaves)
        time_part = (vjps[self.n_y + n_l:], ks) if t_leaves is not None else None
        leaf_vjps = vjps[self.n_y: self.n_y + n_l]
        k, groups = self.n_stage_leaves, []
        for j in range(self.n_stages):
            groups.append(leaf_vjps[j * k: (j + 1) * k])
        groups.append(leaf_vjps[self.n_stages * k:])
        grads = [gv[i] if gv is not None else None for gv in self.grad_views]
        return vjps[: self.n_y], groups, grads, time_part

    def accumulate(self, views: list[torch.Tensor], groups: list[list]) -> None:
        """views += Σ over stages of the VJPs: one _foreach op per stage, whatever the number of tensors."""
        k = self.n_stage_leaves
        for j, group in enumerate(groups):
            targets = views[:k] if j < len(groups) - 1 else views[k:]
            pairs = [(view, v) for view, v in zip(targets, group) if v is not None]
            if pairs:
                torch._foreach_add_([p[0] for p in pairs], [p[1] for p in pairs])

    def _time_leaves(self, i: int, coefs):
        """t_i and h as leaves, with the stage times and h·a in the graph (only when t needs a gradient)."""
        problem = self.problem
        acc = problem.accumulate
        c, a, _ = problem.tableau.floats()
        pair = self.t[i: i + 2].detach().to(acc)
        t_i = pair[0].detach().requires_grad_(True)
        h = (pair[1] - pair[0]).detach().requires_grad_(True)
        with torch.enable_grad():
            times = [(t_i + cj * h).to(self.state_dtype) for cj in c]
            new = list(coefs)
            for j, terms in enumerate(problem.plan.stage_terms):
                for l, col in terms:
                    new[col] = h * a[j][l]
        return (t_i, h), times, new

    def time_gradient(self, i: int, time_part, a, scale, ok=None):
        """Add dL/dt_i and dL/dt_{i+1} of this step to grad_t (the update's own h-dependence included)."""
        (d_ti, d_h), ks = time_part
        acc = self.problem.accumulate
        inv = 1.0 if scale is None else scale.reciprocal()
        zero = torch.zeros((), dtype=acc, device=self.grad_t.device)
        d_ti = (d_ti.to(acc) if d_ti is not None else zero) * inv
        d_h = (d_h.to(acc) if d_h is not None else zero) * inv
        _, _, b = self.problem.tableau.floats()
        for j, bj in enumerate(b):
            if bj != 0.0:
                for k in range(self.n_y):
                    d_h = d_h + bj * (a[k] * ks[j][k].detach().to(acc)).sum()
        values = torch.stack([(d_ti - d_h).reshape(()), d_h.reshape(())])
        if ok is not None:
            values = torch.where(ok, values, torch.zeros_like(values))
        self.grad_t[i: i + 2].add_(values)


def _engine_vjp():
    """torch.autograd.grad without its Python-side argument normalization (we pass exactly matching seeds):
    the autograd engine is called directly, as torch.autograd.grad itself does after checking. Falls back
    to torch.autograd.grad where that entry point is not there."""
    try:
        from torch.autograd.variable import Variable

        engine = Variable._execution_engine
    except (ImportError, AttributeError):  # pragma: no cover - other torch builds
        engine = None

    def vjp(outputs, inputs, seeds):
        if engine is None:
            return torch.autograd.grad(outputs, inputs, seeds, allow_unused=True)
        return engine.run_backward(tuple(outputs), tuple(seeds), False, False, tuple(inputs), True, False)

    return vjp


_vjp = _engine_vjp()


def _plain_loop(step: _Step, adjoint: _Adjoint, n_steps: int) -> None:
    """scaling="none": no synchronization at all."""
    for i in range(n_steps - 1, -1, -1):
        a_before = [x.clone() for x in adjoint.a] if step.t is not None else None
        d_y, d_p, grads, time_part = step.vjp(i, adjoint.a, None)
        if time_part is not None:
            step.time_gradient(i, time_part, a_before, None)
        for k, v in enumerate(d_y):
            if v is not None:
                adjoint.a[k].add_(v)
            if grads[k] is not None:
                adjoint.a[k].add_(grads[k])
        if adjoint.views:
            step.accumulate(adjoint.views, d_p)


def _dynamic_loop(step: _Step, adjoint: _Adjoint, n_steps: int) -> None:
    """scaling="dynamic": optimistic rounds, one host sync per round, a retry where an attempt overflowed."""
    problem, stats = step.problem, step.problem.stats
    device = step.stored[0].device
    finite = torch.stack([torch.isfinite(x).all() for x in step.stored]).all()
    scaler = problem.scaler.start(device, problem.accumulate, n_steps, finite)
    zero = torch.zeros((), dtype=problem.accumulate, device=device)
    if adjoint.flat is not None:
        adjoint.step_flat, adjoint.step_views = _flat_buffer(
            [*step.binding.stage_leaves[0], *step.binding.shared_leaves], problem.accumulate)
    position, length = n_steps - 1, n_steps  # the next step to take, and how many to launch blind
    failed_at, consecutive = -1, 0
    while position >= 0:
        count = min(length, position + 1)
        scaler.new_round()
        for i in range(position, position - count, -1):
            _dynamic_attempt(step, adjoint, scaler, i, zero)
        state = scaler.snapshot(adjoint.a)
        stats.n_host_syncs_backward += 1
        stats.scale_min, stats.scale_max = state.scale_min, state.scale_max
        stats.scale_final, stats.headroom_final = state.scale_final, state.headroom
        if state.go:
            position -= count
            length = max(2 * length, 1)  # back to long rounds while nothing overflows
            continue
        position -= state.accepted  # the step that overflowed
        consecutive = consecutive + 1 if position == failed_at else 1
        failed_at = position
        why = 3 if not state.trajectory_finite else 2 if not state.adjoint_finite else 0
        if why == 0 and consecutive > problem.scaler.max_retries:
            why = 1
        if why == 0 and problem.scaler.top - state.headroom <= problem.scaler.exponent_floor:
            why = 4
        if why:
            scaler.forget()
            _give_up(problem, adjoint, position, n_steps, why)
            return
        scaler.halve()
        stats.n_retries += 1
        length = 1  # retry that step alone, then grow the rounds again


def _dynamic_attempt(step: _Step, adjoint: _Adjoint, scaler, i: int, zero: torch.Tensor) -> None:
    a = adjoint.a
    amax = torch.linalg.vector_norm(a[0], float("inf")) if len(a) == 1 else \
        torch.stack([torch.linalg.vector_norm(x, float("inf")) for x in a]).max()
    scale = scaler.scale(amax, i)
    a_before = list(a)
    d_y, d_p, grads, time_part = step.vjp(i, a, scale)
    norms = [torch.linalg.vector_norm(v, float("inf")) for v in d_y if v is not None]
    if adjoint.step_views:
        adjoint.step_flat.zero_()
        step.accumulate(adjoint.step_views, d_p)
        norms.append(torch.linalg.vector_norm(adjoint.step_flat, float("inf")))
    if not norms:
        scaled_max = zero
    elif len(norms) == 1:
        scaled_max = norms[0]
    elif len(norms) == 2:
        scaled_max = torch.maximum(norms[0].to(norms[1].dtype), norms[1])
    else:
        scaled_max = torch.stack([n.to(zero.dtype) for n in norms]).max()
    ok = scaler.observe(scaled_max, i)
    inv = scale.reciprocal()
    for k in range(len(a)):
        new = a[k] if d_y[k] is None else torch.addcmul(a[k], d_y[k], inv)
        if grads[k] is not None:
            new = new + grads[k]
        a[k] = torch.where(ok, new, a[k])
    if adjoint.step_views:
        adjoint.flat.addcmul_(torch.where(ok, adjoint.step_flat, zero), inv)
    if time_part is not None:
        step.time_gradient(i, time_part, a_before, scale, ok)


def _give_up(problem: _Solve, adjoint: _Adjoint, at: int, n_steps: int, why: int) -> None:
    reason = GIVE_UP_REASONS[why].format(retries=problem.scaler.max_retries)
    message = (f"engine backward: gave up at step {at} of {n_steps}: {reason}. Check the forward trajectory and "
               "the loss for inf/NaN, or use a wider precision (bf16 or fp32).")
    problem.stats.gave_up = message
    if problem.on_failure == "raise":
        raise ScalerExhausted(message)
    # GradScaler-style: hand back non-finite gradients; the training loop skips the step and counts it.
    nan = float("nan")
    for x in adjoint.a:
        x.fill_(nan)
    if adjoint.flat is not None:
        adjoint.flat.fill_(nan)


# ---------------------------------------------------------------------------------------------- entry
def _as_grid(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t: expected a 1-D tensor of times, got {type(t).__name__}")
    if t.dim() != 1 or t.shape[0] < 2:
        raise ValueError(f"t: expected a 1-D tensor with at least 2 times, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"t: expected a floating-point tensor, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"t is on {t.device} but y0 is on {device}; put both on the same device")
    return t


def odeint(
    func: Callable,
    y0: torch.Tensor | Sequence[torch.Tensor],
    t: torch.Tensor,
    *,
    method: str | ButcherTableau = "rk4",
    precision: str | Precision = "fp32",
    scaling: str = "none",
    policy: str = "cast",
    accumulate: str | None = None,
    params: Sequence[torch.Tensor] | None = None,
    args: Sequence = (),
    output: str = "accumulate",
    scaler: AdjointScaler | None = None,
    on_failure: str = "raise",
    stats: SolveStats | None = None,
    max_retries: int = 40,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Integrate dy/dt = func(t, y) on the fixed grid `t`; differentiate by the discrete adjoint.

    Arguments:
        func: `func(t, y) -> dy/dt` (or `func(t, y, *args)`), y with y0's structure. A `torch.nn.Module` or a
            bound method of one runs on copies of its parameters and buffers in the compute dtype (the
            caller's tensors are never modified; buffers the field updates in place are written back after
            the forward); its parameters that require grad get gradients.
        y0: a tensor, or a tuple of tensors (e.g. (z, logp)), floating point, all on one device.
        t: 1-D grid of times, strictly monotone (increasing or decreasing). Every interval is one step.
        method: a registered tableau name (euler, midpoint, heun2, rk4 = classical, rk4-38) or a tableau.
        precision: fp64, fp32, tf32, bf16, fp16: the compute dtype of f, the storage dtype of the trajectory
            kept for the backward, and the accumulation dtype of the state (fp32 unless fp64).
        scaling: "none" or "dynamic" (per-step adjoint scaling with retry on overflow).
        policy: "cast" (f, its parameters and the stage arithmetic in the compute dtype: the published
            mixed-precision algorithm) or "autocast" (f under torch.autocast with fp32 parameters, stage
            arithmetic in the accumulation dtype: how torchdiffeq users run low precision).
        accumulate: "fp32" or "fp64" to override the accumulation dtype (fp64 for very small steps).
        params: for a plain closure, the tensors it captures that need gradients (torchdiffeq's
            `adjoint_params`); for a Module, a subset of its parameters (default: all requiring grad).
        args: extra arguments, `func(t, y, *args)`; floating tensors among them are cast copies under the
            full-cast policy and get gradients when they require grad (explicit parameters, diffrax-style).
        output: "accumulate" (default): the returned trajectory holds the high-precision states in the
            accumulation dtype, so ∂L/∂y enters the backward unquantized (it costs one fp32 trajectory while
            the caller keeps it); "final": return only y(T) (y0's structure, accumulation dtype, no time axis):
            unquantized and no extra memory, what a loss on the final state needs; "storage": return the
            16-bit trajectory kept for the backward itself (no extra memory, but ∂L/∂y arrives in 16 bits).
        scaler: an `AdjointScaler` to reuse across solves (keeps its learned headroom); default: a fresh one.
        on_failure: "raise" (ScalerExhausted when the dynamic scaler gives up) or "nonfinite" (return NaN
            gradients, as GradScaler does, so a training loop can skip the step).
        stats: a fresh `SolveStats` to receive counts and the scaling history of this solve.
        max_retries: halvings of the scale allowed at one step before the backward gives up.

    Returns:
        The trajectory with y0's structure, each component of shape (len(t), *y0.shape) (torchdiffeq's
        convention: index [-1] for the final state), or y(T) alone with output="final".

    The gradient contract is PyTorch's: `.backward()` and `torch.autograd.grad` give every input its full
    gradient once per backward (hooks fire once); double backward raises (once_differentiable).
    """
    spec = StateSpec(y0)
    device = spec.flat[0].device
    for k, y in enumerate(spec.flat):
        if y.device != device:
            raise ValueError(f"y0[{k}] is on {y.device}, y0[0] on {device}: put the state on one device")
    t = _as_grid(t, device)
    tableau = get_method(method)
    prec = get_precision(precision)
    if scaling not in ENGINE_SCALINGS:
        raise ValueError(
            f"scaling={scaling!r} is not supported by the engine; valid: {', '.join(ENGINE_SCALINGS)} "
            "(GradScaler-style loss scaling is the 'grad' scaling of the torchdiffeq backends)"
        )
    if output not in OUTPUTS:
        raise ValueError(f"output={output!r}; valid: {', '.join(OUTPUTS)}")
    if on_failure not in ON_FAILURE:
        raise ValueError(f"on_failure={on_failure!r}; valid: {', '.join(ON_FAILURE)}")
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r}; valid: {', '.join(POLICIES)}")
    if accumulate is None:
        acc = prec.accumulate
    elif accumulate in _ACCUMULATE:
        acc = _ACCUMULATE[accumulate]
    else:
        raise ValueError(f"accumulate={accumulate!r}; valid: {', '.join(_ACCUMULATE)} or None")
    if scaling == "dynamic":
        if scaler is None:
            scaler = AdjointScaler(prec.compute, max_retries=max_retries)
    else:
        scaler = None
    field_call = FieldCall(func, policy=policy, compute=prec.compute, accumulate=acc, params=params, args=args,
                           device=device)
    problem = _Solve(
        field=field_call, spec=spec, tableau=tableau, precision=prec, accumulate=acc, scaler=scaler,
        stats=stats if stats is not None else SolveStats(), output=output, on_failure=on_failure,
        grad_wanted=torch.is_grad_enabled(), device=device,
    )
    problem.plan = _Plan.of(tableau)
    problem.stats.policy = policy
    traj = _OdeintFunction.apply(problem, t, *spec.flat, *field_call.diff_inputs)
    return spec.pack(traj)
