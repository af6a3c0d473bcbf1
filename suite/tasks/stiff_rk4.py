"""Task `stiff-rk4`: gradient accuracy on a stiff scalar ODE that spans the whole fp16 range.

y'(t) = -λ(t) y, λ(t) = θ1 t² + θ2 t + θ3, loss ½ y(T)². The closed form y(T) = y0 exp(-Λ(T)),
Λ(T) = θ1 T³/3 + θ2 T²/2 + θ3 T, gives the exact value and exact derivatives in float64:
∂L/∂y0 = y(T)²/y0 and ∂L/∂θ_k = -y(T)² T^(4-k)/(4-k) (k = 1, 2, 3). Seed slide "Validation: Adjoint
Scaling on Stiff ODE"; the published table used θ2 = -10 (the -11 printed on the slide overflows fp16).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field

from suite.measure import Stopwatch
from suite.rules import Rule
from suite.tasks._base import TASKS, AbstractTask, CellContext, NonFiniteResult, TaskParams
from suite.tasks._gradients import scaled_gradients

METRICS = ("rel_err_y_T", "rel_err_grad_y0", "rel_err_grad_theta1", "rel_err_grad_theta2", "rel_err_grad_theta3")


class StiffParams(TaskParams):
    theta: tuple[float, float, float] = (8.0, -10.0, 2.0**-16)
    T: float = Field(2.65, gt=0)
    y0: float = 65504.0 / 180.0
    y0_in_working_precision: bool = Field(
        True,
        description="Round y0 to the cell's storage dtype before solving (the input enters at the working "
        "precision); the reference uses the exact y0, so this rounding counts as error.",
    )
    repeats: int = Field(1, ge=1, json_schema_extra={"scale": True}, description="timed repetitions (median)")


def closed_form(params: StiffParams) -> dict[str, float]:
    th1, th2, th3 = params.theta
    T = params.T
    big_lambda = th1 * T**3 / 3 + th2 * T**2 / 2 + th3 * T
    y_T = params.y0 * math.exp(-big_lambda)
    sq = y_T * y_T
    return {
        "y_T": y_T,
        "grad_y0": sq / params.y0,
        "grad_theta1": -sq * T**3 / 3,
        "grad_theta2": -sq * T**2 / 2,
        "grad_theta3": -sq * T,
        "loss": 0.5 * sq,
    }


def vector_field(theta: torch.Tensor):
    """f(t, y) = -λ(t) y evaluated in the working dtype: the autocast dtype inside an autocast region,
    else y's dtype. Casting t and θ too is what makes the problem genuinely low precision (as the
    reference did); otherwise the fp32 θ would promote every operation back to fp32."""

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        kind = y.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else y.dtype
        th = theta.to(dtype)
        t = t.to(dtype)
        lam = th[0] * t**2 + th[1] * t + th[2]
        return -lam * y.to(dtype)

    return f


def _relative_error(value: float, exact: float) -> float:
    return abs(value - exact) / abs(exact)


@TASKS.register_instance("stiff-rk4")
class StiffRK4(AbstractTask):
    name = "stiff-rk4"
    Params = StiffParams
    metric_names: ClassVar[tuple[str, ...]] = METRICS
    gate_rules: ClassVar[dict[str, Rule]] = {name: Rule("relative", "lower", 0.05, atol=1e-9) for name in METRICS}
    summary = "gradient accuracy on a stiff ODE spanning the fp16 range, against the closed form"

    def reference(self, params: StiffParams) -> dict[str, float]:
        return closed_form(params)

    def run(self, params: StiffParams, ctx: CellContext) -> dict[str, float]:
        exact = closed_form(params)
        master = ctx.precision.master
        y0_value = torch.tensor([params.y0], dtype=torch.float64)
        if params.y0_in_working_precision:
            y0_value = y0_value.to(ctx.precision.storage)
        t = torch.linspace(0.0, params.T, ctx.steps + 1, dtype=master, device=ctx.device)
        watch = Stopwatch(ctx.device)
        for rep in range(params.repeats):
            ctx.check_deadline()
            theta = torch.tensor(params.theta, dtype=master, device=ctx.device, requires_grad=True)
            y0 = y0_value.to(device=ctx.device, dtype=master).requires_grad_(True)
            final: dict[str, torch.Tensor] = {}

            def loss_fn(theta=theta, y0=y0, final=final):
                with watch("fwd_s"), ctx.solver.autocast(ctx.device):
                    y_T = ctx.solver.final_state(vector_field(theta), y0, t, params=[theta]).to(master)
                    final["y_T"] = y_T.detach()
                    return 0.5 * (y_T**2).sum()

            with watch("grad_s"):
                (g_y0, g_theta), info = scaled_gradients(loss_fn, [y0, theta], ctx.solver, ctx.device)
            # grad_s holds every forward of this repetition (GradScaler may retry) plus the backward(s).
            forwards = watch.samples["fwd_s"][-info.get("grad_attempts", 1):]
            watch.add("bwd_s", watch.samples["grad_s"][-1] - sum(forwards))
            ctx.report_progress((rep + 1) / params.repeats)
        ctx.timing.update(watch.median())
        ctx.extra.update({k: v for k, v in info.items() if k != "loss"})
        if ctx.solver.last_stats is not None:
            ctx.stats.update(ctx.solver.last_stats.as_dict())
        y_T = float(final["y_T"].double().sum())
        if not math.isfinite(y_T):
            raise NonFiniteResult(
                f"y(T) = {y_T}: the forward solve went non-finite in {ctx.precision.name} (overflow or NaN)"
            )
        grads = {"grad_y0": float(g_y0.double().sum())}
        grads.update({f"grad_theta{k + 1}": float(g_theta[k].double()) for k in range(3)})
        bad = [name for name, value in grads.items() if not math.isfinite(value)]
        if bad:
            raise NonFiniteResult(f"non-finite gradient(s): {', '.join(bad)}")
        ctx.extra.update({"y_T": y_T, **grads, "reference": exact})
        metrics = {"rel_err_y_T": _relative_error(y_T, exact["y_T"])}
        metrics.update({f"rel_err_{name}": _relative_error(value, exact[name]) for name, value in grads.items()})
        return metrics
