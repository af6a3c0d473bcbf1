"""Fixed-grid mixed-precision `odeint` with a discrete-adjoint backward pass.

Forward ("quantize, accumulate high"): y_H ← y_H + h Φ(f, Q_L(y_H), t, h) with f in the compute dtype,
y_H in the accumulation dtype, and only Q_L(y_H) stored. Backward ("dynamic adjoint scaling"): per step,
rebuild Φ from the stored state and take the vector-Jacobian product of S·a, then
a ← a + (h/S)·Q_H(da) and g ← g + (h/S)·Q_H(dθ). This is discretize-then-optimize: the gradient is the
exact gradient of the discrete forward map (up to rounding), for any tableau.

The backward loop indexes the stored trajectory with a *device* step counter, so a rejected attempt
(overflow) simply does not advance it: the host runs N attempts, then reads the counter once, and runs
the remaining attempts if retries happened. Without overflow that is one host synchronization per
backward pass (none at all with scaling="none").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from suite.engine._casting import parameters_in_dtype
from suite.engine._scaler import DynamicScale, FixedScale, ScalerExhausted
from suite.engine._stats import SolveStats
from suite.engine._step import StateSpec, increment
from suite.engine._tableau import ButcherTableau, get_method
from suite.precision import Precision, get_precision, tf32_mode

__all__ = ["odeint", "ENGINE_SCALINGS"]

ENGINE_SCALINGS = ("none", "dynamic")
_ACCUMULATE = {"fp32": torch.float32, "fp64": torch.float64}


@dataclass
class _Problem:
    """Everything the autograd function needs besides tensors."""

    func: Callable
    spec: StateSpec
    tableau: ButcherTableau
    precision: Precision
    accumulate: torch.dtype
    dynamic: bool
    cast_tensors: list[torch.Tensor]
    params: list[torch.Tensor]
    stats: SolveStats
    max_retries: int

    def modes(self, device: torch.device):
        """Context managers that fix the numerical mode, whatever the caller's autocast/TF32 state."""
        return (
            torch.autocast(device.type, enabled=False),
            tf32_mode(self.precision.tf32),
            parameters_in_dtype(self.cast_tensors, self.precision.compute),
        )


def _enter(managers) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    for m in managers:
        stack.enter_context(m)
    return stack


class _OdeintFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: _Problem, t: torch.Tensor, *tensors: torch.Tensor):
        n_y = len(problem.spec.shapes)
        ys = tensors[:n_y]
        n_steps = t.shape[0] - 1
        storage = problem.precision.storage
        traj = [torch.empty((n_steps + 1, *y.shape), dtype=storage, device=y.device) for y in ys]
        with _enter(problem.modes(ys[0].device)):
            y_high = [y.detach().to(problem.accumulate) for y in ys]
            for k, y in enumerate(y_high):
                traj[k][0].copy_(y)
            for i in range(n_steps):
                h = t[i + 1] - t[i]
                phi, nfe = increment(
                    problem.func, problem.spec, problem.tableau, t[i], h,
                    [tr[i] for tr in traj], problem.precision.compute, problem.accumulate,
                )
                h_acc = h.to(problem.accumulate)
                for k in range(n_y):
                    y_high[k] = y_high[k] + h_acc * phi[k]
                    traj[k][i + 1].copy_(y_high[k])
                problem.stats.nfe_forward += nfe
        problem.stats.n_steps = n_steps
        ctx.problem = problem
        ctx.save_for_backward(t, *traj)
        ctx.input_dtypes = [x.dtype for x in tensors]
        return tuple(traj)

    @staticmethod
    def backward(ctx, *grad_traj: torch.Tensor):
        problem: _Problem = ctx.problem
        t, *traj = ctx.saved_tensors
        n_y = len(traj)
        want_t = ctx.needs_input_grad[1]
        params = problem.params
        with _enter(problem.modes(t.device)):
            grads_y, grads_p, grad_t = _backward_loop(problem, t, traj, list(grad_traj), params, want_t)
        out_y = [g.to(dt) for g, dt in zip(grads_y, ctx.input_dtypes[:n_y])]
        out_p = [g.to(dt) for g, dt in zip(grads_p, ctx.input_dtypes[n_y:])]
        return (None, grad_t.to(t.dtype) if grad_t is not None else None, *out_y, *out_p)


def _inf_norm(x: torch.Tensor) -> torch.Tensor:
    """max |x| as float32 (NaN/inf propagate), one reduction kernel."""
    return torch.linalg.vector_norm(x, float("inf")).float()


def _backward_loop(problem, t, traj, grad_traj, params, want_t):
    acc = problem.accumulate
    device = t.device
    n_steps = t.shape[0] - 1
    stats = problem.stats
    if problem.dynamic:
        scaler = DynamicScale(device, acc, problem.precision.compute, max_retries=problem.max_retries)
    else:
        scaler = FixedScale(device, acc)
    adj = [g[n_steps].to(acc) for g in grad_traj]
    grad_p = [torch.zeros_like(p, dtype=acc) for p in params]
    grad_t = torch.zeros(n_steps + 1, dtype=acc, device=device) if want_t else None
    idx = torch.full((), n_steps - 1, dtype=torch.int64, device=device)
    remaining = n_steps
    while remaining > 0:
        for _ in range(remaining):
            adj = _attempt(problem, scaler, t, traj, grad_traj, params, adj, grad_p, grad_t, idx)
            stats.nfe_backward += problem.tableau.n_stages
            stats.n_backward_attempts += 1
        if not scaler.dynamic:
            break
        # The only host synchronization of a round: where the step counter stands, and the scaler's record.
        pos, exhausted, retries, lo, hi, last = torch.stack([
            idx.double(), scaler.exhausted.double(), scaler.n_retries.double(),
            scaler.scale_min, scaler.scale_max, scaler.accepted_scale.double(),
        ]).tolist()
        stats.n_host_syncs_backward += 1
        stats.scale_min, stats.scale_max, stats.scale_final, stats.n_retries = lo, hi, last, int(retries)
        if exhausted:
            raise ScalerExhausted(
                f"engine backward: the adjoint stayed non-finite at step {int(pos)} of {n_steps} after "
                f"{problem.max_retries} halvings of the scale (scale {last:.3g} at the last accepted step); "
                "the vector field produces inf/NaN in its vector-Jacobian product at any scale. Check the "
                "forward trajectory for inf/NaN, or use a wider precision (bf16 or fp32)."
            )
        remaining = int(pos) + 1
    stats.backward_done = True
    return adj, grad_p, grad_t


def _attempt(problem, scaler, t, traj, grad_traj, params, adj, grad_p, grad_t, idx):
    """One backward attempt at step idx; updates in place or returns the new adjoint list."""
    acc = problem.accumulate
    active = idx >= 0
    i = idx.clamp(min=0).view(1)
    y_i = [tr.index_select(0, i).squeeze(0).detach().requires_grad_(True) for tr in traj]
    t_i = t.index_select(0, i).squeeze(0)
    h = t.index_select(0, i + 1).squeeze(0) - t_i
    want_t = grad_t is not None
    if want_t:
        t_i = t_i.detach().requires_grad_(True)
        h = h.detach().requires_grad_(True)
    with torch.enable_grad():
        phi, _ = increment(problem.func, problem.spec, problem.tableau, t_i, h, y_i,
                           problem.precision.compute, acc)
    # Magnitudes are measured only when they steer the scale (dynamic); scaling="none" skips the reductions.
    adj_max = torch.stack([_inf_norm(a) for a in adj]).max() if scaler.dynamic else None
    scale = scaler.scale(adj_max)
    inputs = [*y_i, *params] + ([t_i, h] if want_t else [])
    vjps = torch.autograd.grad(phi, inputs, [scale * a for a in adj], allow_unused=True)
    vjps = [v if v is not None else torch.zeros_like(x) for v, x in zip(vjps, inputs)]
    ok = None
    if scaler.dynamic:
        scaled_max = torch.stack([adj_max * scale.float()] + [_inf_norm(v) for v in vjps]).max()
        ok = scaler.observe(scaled_max, active)
    h_acc = h.detach().to(acc)
    coef = h_acc / scale
    n_y = len(adj)
    g_now = [g.index_select(0, i).squeeze(0).to(acc) for g in grad_traj]
    new_adj = []
    # a_i = a_{i+1} + h (∂Φ/∂y_i)ᵀ a_{i+1} + ∂L/∂y(t_i): the last term is the output gradient at t_i.
    for a, da, g in zip(adj, vjps[:n_y], g_now):
        updated = a + coef * da.to(acc) + g
        new_adj.append(updated if ok is None else torch.where(ok, updated, a))
    for gp, dp in zip(grad_p, vjps[n_y:n_y + len(params)]):
        step = coef * dp.to(acc)
        gp.add_(step if ok is None else torch.where(ok, step, torch.zeros_like(step)))
    if want_t:
        d_ti, d_h = vjps[-2].to(acc) / scale, vjps[-1].to(acc) / scale
        a_dot_phi = sum((a * p.detach()).sum() for a, p in zip(adj, phi))
        dl_dh = a_dot_phi + h_acc * d_h
        dl_dti = h_acc * d_ti
        vals = torch.stack([dl_dti - dl_dh, dl_dh])
        if ok is not None:
            vals = torch.where(ok, vals, torch.zeros_like(vals))
        grad_t.index_add_(0, torch.cat([i, i + 1]), vals)
    if ok is None:
        idx.sub_(1)
    else:
        idx.sub_(ok.long())
    return new_adj


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
    accumulate: str | None = None,
    params: Sequence[torch.Tensor] | None = None,
    stats: SolveStats | None = None,
    max_retries: int = 40,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Integrate dy/dt = func(t, y) on the fixed grid `t`; differentiate by the discrete adjoint.

    Arguments:
        func: `func(t, y) -> dy/dt`, y with y0's structure. If it is a `torch.nn.Module`, its
            parameters get gradients and its floating parameters and buffers run in the compute dtype.
        y0: a tensor, or a tuple of tensors (e.g. (z, logp)), floating point, all on one device.
        t: 1-D grid of times, strictly monotone (increasing or decreasing). Every interval is one step.
        method: a registered tableau name (euler, midpoint, heun2, rk4 = classical, rk4-38) or a tableau.
        precision: fp64, fp32, tf32, bf16, fp16: f runs in the compute dtype, the state accumulates in
            `accumulate` (fp32 unless fp64), and the returned/stored trajectory has the storage dtype.
        scaling: "none" or "dynamic" (per-step adjoint scaling with retry on overflow).
        accumulate: "fp32" or "fp64" to override the accumulation dtype (fp64 for very small steps).
        params: explicit parameter tensors of func (for closures); default: func.parameters().
        stats: a fresh `SolveStats` to receive counts and the scaling history of this solve.
        max_retries: consecutive halvings allowed at one step before the backward gives up.

    Returns:
        The trajectory with y0's structure, each component of shape (len(t), *y0.shape), in the storage
        dtype (torchdiffeq's convention: index [-1] for the final state).

    Raises:
        ValueError/TypeError: bad arguments, with the allowed values.
        ScalerExhausted: (backward) the adjoint stayed non-finite at a step at every scale.

    The behaviour is set by these arguments alone: autocast is disabled inside, TF32 follows `precision`.
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
    if accumulate is None:
        acc = prec.accumulate
    elif accumulate in _ACCUMULATE:
        acc = _ACCUMULATE[accumulate]
    else:
        raise ValueError(f"accumulate={accumulate!r}; valid: {', '.join(_ACCUMULATE)} or None")
    if params is None:
        params = list(func.parameters()) if isinstance(func, torch.nn.Module) else []
    params = list(params)
    cast = list(params)
    if isinstance(func, torch.nn.Module):
        known = {id(p) for p in cast}
        cast += [x for x in (*func.parameters(), *func.buffers()) if id(x) not in known]
    grad_params = [p for p in params if p.requires_grad]
    problem = _Problem(
        func=func, spec=spec, tableau=tableau, precision=prec, accumulate=acc,
        dynamic=scaling == "dynamic", cast_tensors=cast, params=grad_params,
        stats=stats if stats is not None else SolveStats(), max_retries=max_retries,
    )
    traj = _OdeintFunction.apply(problem, t, *spec.flat, *grad_params)
    return spec.pack(traj)
