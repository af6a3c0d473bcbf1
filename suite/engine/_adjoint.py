"""The discrete adjoint: the backward pass of `odeint`, step by step from the stored trajectory.

Per step, the stages are rebuilt from the stored state and one vector-Jacobian product is taken with the
adjoint (scaled per step into the low dtype's range under scaling="dynamic"). Every stage runs on its own
parameter leaves, so autograd returns one gradient per stage and tensor instead of summing them tensor by
tensor, and the sums are one `_foreach` operation per stage into a flat fp32 buffer.

scaling="dynamic": steps run in rounds the host launches without looking; an attempt that overflows freezes
the rest of its round, and the host, reading the scaler once per round, retries that step with the scale
halved (then grows the rounds again: 1, 2, 4, ... steps). Without overflow that is one host synchronization
per backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from suite.deadline import check_deadline, unbind_checked
from suite.engine._field import Binding
from suite.engine._scaler import GIVE_UP_REASONS, OnFailure, ScalerExhausted
from suite.engine._stepping import Grid, Solve

__all__ = ["backward"]


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


def backward(problem: Solve, binding: Binding, grid: Grid, t, source, grad_outputs, want_t, final_only):
    """The adjoint sweep, n-1 down to 0; `source` gives each step's recorded stages (suite/engine/_memory.py)."""
    acc = problem.accumulate
    n_steps = t.shape[0] - 1
    leaves = [*binding.stage_leaves[0], *binding.shared_leaves]  # one per differentiable input
    flat, views = _flat_buffer(leaves, acc)
    finals = [g if final_only else (g[n_steps] if g is not None else None) for g in grad_outputs]
    device = t.device
    adjoint = _Adjoint(
        a=[(g.to(acc, copy=True) if g is not None else torch.zeros(shape, dtype=acc, device=device))
           for g, shape in zip(finals, source.shapes)],
        flat=flat, views=views,
    )
    if final_only:  # no gradient arrives at the intermediate times
        grad_outputs = [None] * len(grad_outputs)
    grad_t = torch.zeros(n_steps + 1, dtype=acc, device=t.device) if want_t else None
    step = _Step(problem, binding, grid, source, grad_outputs, t if want_t else None, grad_t)
    if problem.scaler is None:
        _plain_loop(step, adjoint, n_steps)
    else:
        _dynamic_loop(step, adjoint, n_steps)
    problem.stats.backward_done = True
    # a parameter the field never reached gets a zero gradient (torchdiffeq returns zeros too)
    return adjoint.a, list(adjoint.views), grad_t


class _Step:
    """One step's vector-Jacobian product, on host-indexed steps."""

    def __init__(self, problem: Solve, binding: Binding, grid: Grid, source, grad_outputs, t, grad_t) -> None:
        self.problem, self.binding, self.grid, self.source = problem, binding, grid, source
        self.grad_outputs = grad_outputs
        self.t, self.grad_t = t, grad_t
        self.state_dtype = problem.field.state_dtype
        self.n_y = len(source.shapes)
        # inputs of each step's VJP after the state: every stage's own leaves, then the shared ones
        self.leaves = [x for stage in binding.stage_leaves for x in stage] + list(binding.shared_leaves)
        self.n_stages = len(binding.stage_leaves)
        self.n_stage_leaves = len(binding.stage_leaves[0])
        self.grad_views = [unbind_checked(g) if g is not None else None for g in grad_outputs]
        # grad outputs h·b_j·a are written into these compute-dtype buffers (one per component and distinct b)
        device = t.device if t is not None else grid.times[0].device
        self.seed_buffers = [[torch.empty(shape, dtype=self.state_dtype, device=device)
                              for _ in problem.plan.b_groups] for shape in source.shapes]

    def vjp(self, i: int, a: list[torch.Tensor], scale: torch.Tensor | None):
        """VJPs (scaled by `scale`) of Σ_j h b_j K_j with the adjoint a: (d/dy per component, grouped d/dleaves,
        the incoming output gradient at t_i per component, the t-part when t needs a gradient)."""
        problem, plan = self.problem, self.problem.plan
        recorded = self.source.step(i)
        ks, t_leaves = recorded.ks, recorded.t_leaves
        outputs, seeds = [], []
        for k in range(self.n_y):
            scaled = a[k] if scale is None else a[k] * scale
            for g, (col, stages) in enumerate(plan.b_groups):
                seed = torch.mul(scaled, self.grid.coefs[i][col], out=self.seed_buffers[k][g])
                for j in stages:
                    if ks[j][k].requires_grad:
                        outputs.append(ks[j][k])
                        seeds.append(seed)
        inputs = [*recorded.base, *self.leaves] + (list(t_leaves) if t_leaves is not None else [])
        if outputs:
            vjps = list(_vjp(outputs, inputs, seeds, self.source.retains))
        else:  # no stage output depends on anything differentiable: every VJP is zero
            vjps = [None] * len(inputs)
        if not self.source.retains:
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

    def vjp(outputs, inputs, seeds, retain: bool = False):
        if engine is None:
            return torch.autograd.grad(outputs, inputs, seeds, retain_graph=retain, allow_unused=True)
        return engine.run_backward(tuple(outputs), tuple(seeds), retain, False, tuple(inputs), True, False)

    return vjp


_vjp = _engine_vjp()


def _plain_loop(step: _Step, adjoint: _Adjoint, n_steps: int) -> None:
    """scaling="none": no synchronization at all."""
    for i in range(n_steps - 1, -1, -1):
        check_deadline()  # every memory setting: "stages" replays recorded steps without evaluate_stages
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
        step.source.release(i)


def _dynamic_loop(step: _Step, adjoint: _Adjoint, n_steps: int) -> None:
    """scaling="dynamic": optimistic rounds, one host sync per round, a retry where an attempt overflowed."""
    problem, stats = step.problem, step.problem.stats
    device = step.source.device
    scaler = problem.scaler.start(device, problem.accumulate, n_steps, step.source.finite())
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
            check_deadline()
            _dynamic_attempt(step, adjoint, scaler, i, zero)
        state = scaler.snapshot(adjoint.a)
        stats.n_host_syncs_backward += 1
        stats.scale_min, stats.scale_max = state.scale_min, state.scale_max
        stats.scale_final, stats.headroom_final = state.scale_final, state.headroom
        if state.go:
            for i in range(position, position - count, -1):
                step.source.release(i)
            position -= count
            length = max(2 * length, 1)  # back to long rounds while nothing overflows
            continue
        for i in range(position, position - state.accepted, -1):
            step.source.release(i)
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


def _give_up(problem: Solve, adjoint: _Adjoint, at: int, n_steps: int, why: int) -> None:
    reason = GIVE_UP_REASONS[why].format(retries=problem.scaler.max_retries)
    message = (f"engine backward: gave up at step {at} of {n_steps}: {reason}. Check the forward trajectory and "
               "the loss for inf/NaN, or use a wider precision (bf16 or fp32).")
    problem.stats.gave_up = message
    if problem.on_failure == OnFailure.RAISE:
        raise ScalerExhausted(message)
    # GradScaler-style: hand back non-finite gradients; the training loop skips the step and counts it.
    nan = float("nan")
    for x in adjoint.a:
        x.fill_(nan)
    if adjoint.flat is not None:
        adjoint.flat.fill_(nan)
