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
dtype, once (suite/engine/_stepping.py). The backward is in suite/engine/_adjoint.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.autograd.function import once_differentiable

from suite.engine._adjoint import backward
from suite.engine._field import POLICIES, Binding, FieldCall
from suite.engine._scaler import AdjointScaler
from suite.engine._stats import SolveStats
from suite.engine._step import StateSpec
from suite.engine._stepping import Plan, Solve, evaluate_stages
from suite.engine._tableau import ButcherTableau, get_method
from suite.precision import Precision, get_precision

__all__ = ["odeint", "ENGINE_SCALINGS", "OUTPUTS", "ON_FAILURE"]

ENGINE_SCALINGS = ("none", "dynamic")
OUTPUTS = ("accumulate", "storage", "final")
ON_FAILURE = ("raise", "nonfinite")
_ACCUMULATE = {"fp32": torch.float32, "fp64": torch.float64}


class _OdeintFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: Solve, t: torch.Tensor, *tensors: torch.Tensor):
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
                ks = evaluate_stages(problem, binding.calls, base, grid.stage_times(i), coefs,
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
        problem: Solve = ctx.problem
        t, *stored = ctx.saved_tensors
        n_y = len(stored)
        want_t = ctx.needs_input_grad[1]
        binding = problem.field.bind(for_backward=True, n_stages=problem.tableau.n_stages)
        with problem.modes(), binding.context:
            grads_y, grads_p, grad_t = backward(problem, binding, ctx.grid, t, stored, list(grad_outputs), want_t,
                                                 ctx.final_only)
        out_y = [g.to(dt) for g, dt in zip(grads_y, ctx.input_dtypes[:n_y])]
        out_p = [g.to(dt) if g is not None else None for g, dt in zip(grads_p, ctx.input_dtypes[n_y:])]
        return (None, grad_t.to(t.dtype) if grad_t is not None else None, *out_y, *out_p)



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
    problem = Solve(
        field=field_call, spec=spec, tableau=tableau, precision=prec, accumulate=acc, scaler=scaler,
        stats=stats if stats is not None else SolveStats(), output=output, on_failure=on_failure,
        grad_wanted=torch.is_grad_enabled(), device=device,
    )
    problem.plan = Plan.of(tableau)
    problem.stats.policy = policy
    traj = _OdeintFunction.apply(problem, t, *spec.flat, *field_call.diff_inputs)
    return spec.pack(traj)
