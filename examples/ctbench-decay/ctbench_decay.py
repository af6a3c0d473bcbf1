"""A ctbench plug-in: task `decay` (y' = -k y against its closed form) and backend `midpoint-loop` (the
explicit midpoint rule in plain torch). Its entry points (pyproject.toml) register both once installed."""

import math
from typing import ClassVar

import torch
from pydantic import Field

from suite.backends import AbstractBackend, AbstractSolver, Capabilities
from suite.rules import Rule
from suite.tasks import AbstractTask, TaskParams


class DecayParams(TaskParams):
    k: float = Field(1.5, gt=0)
    T: float = Field(2.0, gt=0)


class Decay(AbstractTask):
    Params = DecayParams
    metric_names: ClassVar[tuple[str, ...]] = ("rel_err_y_T", "rel_err_grad_k")
    gate_rules: ClassVar[dict[str, Rule]] = {m: Rule("relative", "lower", 0.05) for m in metric_names}
    summary = "y' = -k y: y(T) and dy(T)/dk against exp(-kT) and -T exp(-kT)"

    def run(self, params: DecayParams, ctx) -> dict[str, float]:
        dtype = ctx.precision.master
        k = torch.tensor(params.k, dtype=dtype, device=ctx.device, requires_grad=True)
        t = torch.linspace(0.0, params.T, ctx.steps + 1, dtype=dtype, device=ctx.device)
        y0 = torch.ones(1, dtype=dtype, device=ctx.device)
        y_T = ctx.solver.final_state(lambda t, y: -k * y, y0, t, params=[k]).sum()
        (grad_k,) = torch.autograd.grad(y_T, [k])
        exact = math.exp(-params.k * params.T)
        return {"rel_err_y_T": abs(y_T.item() - exact) / exact,
                "rel_err_grad_k": abs(grad_k.item() + params.T * exact) / (params.T * exact)}


class MidpointSolver(AbstractSolver):
    def odeint(self, func, y0, t, params=None):
        ys = [y0]
        for t0, t1 in zip(t[:-1], t[1:]):
            h, y = t1 - t0, ys[-1]
            ys.append(y + h * func(t0 + h / 2, y + h / 2 * func(t0, y)))
        return torch.stack(ys)


class MidpointBackend(AbstractBackend):
    caps = Capabilities(methods=frozenset({"midpoint"}), precisions=frozenset({"fp32"}), scalings=frozenset({"none"}))
    solver_class = MidpointSolver
    summary = "explicit midpoint in plain torch (the plug-in example)"
