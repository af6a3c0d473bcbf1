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

from suite.deadline import unbind_checked
from suite.engine._adjoint import backward
from suite.engine._field import POLICIES, Binding, FieldCall
from suite.engine._memory import Kept, Recompute, Segments, advance, quantized, record_step
from suite.engine._memory_setting import MEMORY_SETTINGS, MemoryPlan, parse_memory
from suite.engine._scaler import AdjointScaler, OnFailure
from suite.engine._stats import SolveStats
from suite.engine._step import StateSpec
from suite.engine._stepping import Plan, Solve, evaluate_stages
from suite.engine._tableau import ButcherTableau, get_method
from suite.precision import Precision, get_precision

__all__ = ["odeint", "ENGINE_SCALINGS", "OUTPUTS", "ON_FAILURE", "MEMORY_SETTINGS"]

ENGINE_SCALINGS = ("none", "dynamic")
OUTPUTS = ("accumulate", "storage", "final")
ON_FAILURE = tuple(OnFailure)
_ACCUMULATE = {"fp32": torch.float32, "fp64": torch.float64}


class _OdeintFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: Solve, t: torch.Tensor, *tensors: torch.Tensor):
        n_y = len(problem.spec.shapes)
        ys = tensors[:n_y]
        n_steps = t.shape[0] - 1
        acc, storage = problem.accumulate, problem.precision.storage
        memory = problem.memory
        final_only = problem.output == "final"
        separate_output = problem.output == "accumulate" and storage != acc
        # the 16-bit trajectory: kept for the backward under memory="states", returned with output="storage"
        # (or when storage is the accumulation dtype); otherwise never allocated
        keep_stored = memory.kind == "states" or (not final_only and not separate_output)
        stored = [torch.empty((n_steps + 1, *y.shape), dtype=storage, device=y.device) for y in ys] \
            if keep_stored else None
        outputs = [torch.empty((n_steps + 1, *y.shape), dtype=acc, device=y.device) for y in ys] \
            if separate_output else stored
        grid = problem.grid
        want_t = ctx.needs_input_grad[1]
        recording = memory.kind == "stages" and problem.grad_wanted
        # memory="stages" evaluates on the backward's per-stage leaves, recording (the probe's binding only
        # served the probe); the other settings evaluate on the probe's binding, without autograd
        binding: Binding = problem.field.bind(for_backward=True, n_stages=problem.tableau.n_stages,
                                              private_buffers=False) if recording else problem.binding
        every = memory.interval(n_steps) if memory.kind == "checkpoint" else 0
        checkpoints: list[list[torch.Tensor]] = []
        kept: list = []
        with problem.modes(), binding.context:
            y_high = [y.detach().to(acc, copy=True) for y in ys]
            stored_views = [unbind_checked(x) for x in stored] if stored is not None else None
            output_views = [unbind_checked(o) for o in outputs] if separate_output else None

            def write(i: int) -> None:
                for k in range(n_y):
                    if stored_views is not None:
                        stored_views[k][i].copy_(y_high[k])
                    if output_views is not None:
                        output_views[k][i].copy_(y_high[k])

            write(0)
            for i in range(n_steps):
                if every and i % every == 0:
                    checkpoints.append([y.clone() for y in y_high])
                if stored_views is not None:
                    base = [sv[i] if storage == problem.field.state_dtype else sv[i].to(problem.field.state_dtype)
                            for sv in stored_views]
                else:
                    base = quantized(problem, y_high)
                if recording:  # own copies of the state: the trajectory's views are written on
                    step = record_step(problem, binding.calls, [b.clone() if stored_views is not None else b
                                                                for b in base], grid, i, t if want_t else None)
                    kept.append(step)
                    ks = step.ks
                else:
                    ks = evaluate_stages(problem, binding.calls, base, grid.stage_times(i), grid.coefs[i],
                                         first=problem.first_stage if i == 0 else None)
                advance(problem, y_high, ks, grid.coefs[i])
                write(i + 1)
        binding.write_back()
        problem.binding = problem.first_stage = None
        problem.stats.n_steps = n_steps
        problem.stats.nfe_forward += n_steps * problem.tableau.n_stages
        problem.stats.memory = str(memory)
        ctx.problem = problem
        ctx.grid = grid
        ctx.n_y = n_y
        if memory.kind == "states":
            ctx.save_for_backward(t, *stored)
        elif memory.kind == "checkpoint":
            ctx.save_for_backward(t, *(x for c in checkpoints for x in c))
            ctx.every = every
        else:
            ctx.save_for_backward(t)
            ctx.kept, ctx.binding = kept, binding  # the recorded graphs hold the activations
        ctx.input_dtypes = [x.dtype for x in tensors]
        ctx.final_only = final_only
        if final_only:
            return tuple(y_high)
        return tuple(outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_outputs: torch.Tensor | None):
        problem: Solve = ctx.problem
        t, *saved = ctx.saved_tensors
        n_y, kind = ctx.n_y, problem.memory.kind
        n_steps = t.shape[0] - 1
        want_t = ctx.needs_input_grad[1]
        if kind == "stages":
            binding = ctx.binding
        else:
            binding = problem.field.bind(for_backward=True, n_stages=problem.tableau.n_stages)
        with problem.modes(), binding.context:
            if kind == "stages":
                source = Kept(problem, binding.calls, ctx.grid, ctx.kept, t if want_t else None)
            elif kind == "states":
                source = Recompute(problem, binding.calls, ctx.grid, saved, t if want_t else None)
            elif kind == "checkpoint":
                checkpoints = [saved[k: k + n_y] for k in range(0, len(saved), n_y)]
                source = Segments(problem, binding.calls, ctx.grid, checkpoints, ctx.every, n_steps,
                                  t if want_t else None)
            grads_y, grads_p, grad_t = backward(problem, binding, ctx.grid, t, source, list(grad_outputs), want_t,
                                                 ctx.final_only)
        out_y = [g.to(dt) for g, dt in zip(grads_y, ctx.input_dtypes[:n_y])]
        out_p = [g.to(dt) if g is not None else None for g, dt in zip(grads_p, ctx.input_dtypes[n_y:])]
        return (None, grad_t.to(t.dtype) if grad_t is not None else None, *out_y, *out_p)


def _prepare(problem: Solve, t: torch.Tensor) -> None:
    """Before the autograd function: the grid, the forward's binding and its first stage, f(t0, Q(y0)).

    That first evaluation is the probe that finds the tensors the field captures, which must be inputs of
    the autograd function to receive gradients; it is computed exactly as the forward would (the stored,
    quantized state in the field's state dtype), and the forward uses it as its first stage."""
    acc, storage = problem.accumulate, problem.precision.storage
    state_dtype = problem.field.state_dtype
    problem.grid = problem.plan.grid(problem.tableau, t, acc, state_dtype)
    # under memory="stages" the forward re-evaluates this stage while recording: the probe then must not
    # update the caller's buffers (BatchNorm statistics) a second time
    binding = problem.field.bind(for_backward=False, private_buffers=problem.memory.kind == "stages")
    with problem.modes(), binding.context:
        base = []
        for y in problem.spec.flat:
            stored = y.detach().to(acc).to(storage)
            base.append(stored if storage == state_dtype else stored.to(state_dtype))
        time = problem.grid.stage_times(0)[0]
        out = problem.field.probe(binding, time, problem.spec.pack(base), problem.grad_wanted)
    problem.binding = binding
    problem.first_stage = problem.spec.unpack(out, "func output at stage 0")


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
    on_failure: OnFailure | str = OnFailure.RAISE,
    stats: SolveStats | None = None,
    max_retries: int = 40,
    memory: str | MemoryPlan = "states",
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
        memory: what the forward keeps for the backward (the same gradients, to rounding, in every setting):
            "states" (default: the trajectory in the storage dtype; the backward re-evaluates each step's
            stages), "stages" (every stage's activations, recorded: nothing re-evaluated, the most memory),
            "checkpoint:K" (every K-th state in the accumulation dtype, each segment re-run forward and
            recorded in the backward: O(n/K + K) states; "checkpoint" alone takes K = ⌈√n⌉).

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
    on_failure = OnFailure(on_failure)
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
    memory_plan = parse_memory(memory)
    field_call = FieldCall(func, policy=policy, compute=prec.compute, accumulate=acc, params=params, args=args,
                           device=device)
    problem = Solve(
        field=field_call, spec=spec, tableau=tableau, precision=prec, accumulate=acc, scaler=scaler,
        stats=stats if stats is not None else SolveStats(), output=output, on_failure=on_failure,
        grad_wanted=torch.is_grad_enabled(), device=device, memory=memory_plan,
    )
    problem.plan = Plan.of(tableau)
    problem.stats.policy = policy
    _prepare(problem, t)
    traj = _OdeintFunction.apply(problem, t, *spec.flat, *field_call.diff_inputs)
    return spec.pack(traj)
