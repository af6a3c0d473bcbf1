"""Task `soc-100d`: 100-D stochastic optimal control (seed slide "100D Stress Test"), NeuralSOC-style.

Minimise E[∫ λ|u|² ds + w g(z_T)], dz = c u ds + σ dW, z(0) = z0, g(z) = ln(½(1 + |z - x_ref|²)), with the
feedback u = -(c/2λ) ∇Φθ of a value network Φθ(x, t) (the OT-Flow potential: ResNet + rank-r quadratic,
gradient and Laplacian in closed form). The roll-out is Euler-Maruyama through the engine (drift and value
network in the cell's precision, state accumulated high), differentiated through the steps (DTO). Loss:
α·(running + terminal cost) + β1·∫|HJB residual| + β2·|Φθ(z_T, T) - w g(z_T)|; the `random-walk` sampler
rolls out dz = σ dW instead (no control, so no cost term). Against the exact value V(0, z0) of
suite/references/cole_hopf.py: `control_objective` is J of the learned feedback on fresh 40-step paths.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from suite.engine import sdeint
from suite.models.otflow_potential import OTFlowPotential
from suite.references.cole_hopf import SOC_VARIANTS, SOCProblem, value_cole_hopf
from suite.rules import Rule
from suite.tasks._base import TASKS, AbstractTask, CellContext, TaskParams
from suite.tasks._training import SCALE, CurveSpec, TrainingLoop


class SOCParams(TaskParams):
    problem: Literal["slide", "neuralsoc-code", "hje-2018"] = "slide"
    sampler: Literal["pmp", "random-walk"] = "pmp"
    d: int = Field(100, ge=2)
    width: int = Field(64, ge=1, json_schema_extra=SCALE)
    n_layers: int = Field(4, ge=2)
    rank: int = Field(10, ge=1)
    val_steps: int = Field(40, ge=1)
    batch: int = Field(64, ge=1, json_schema_extra=SCALE)
    iterations: int = Field(2000, ge=1, json_schema_extra=SCALE)
    val_paths: int = Field(4096, ge=2, json_schema_extra=SCALE)
    val_every: int = Field(100, ge=1, json_schema_extra=SCALE)
    lr: float = Field(2e-3, gt=0)
    lr_step: int = Field(500, ge=1, description="StepLR period (a decay that works: the published one froze)")
    lr_gamma: float = Field(0.5, gt=0, le=1)
    alpha: float = Field(1.0, ge=0, description="weight of running + terminal cost")
    beta_hjb: float = Field(1.0, ge=0)
    beta_terminal: float = Field(1.0, ge=0)

    def control_problem(self) -> SOCProblem:
        import dataclasses

        return dataclasses.replace(SOC_VARIANTS[self.problem], d=self.d)


class SOCDynamics(torch.nn.Module):
    """Drift of the augmented state (z, running cost, |HJB residual|) under u = -(c/2λ)∇Φ; or, for the random
    walk, drift 0 for z (the residual is still measured along the path)."""

    def __init__(self, potential: OTFlowPotential, problem: SOCProblem, controlled: bool) -> None:
        super().__init__()
        self.potential, self.p, self.controlled = potential, problem, controlled

    def forward(self, t, state):
        p = self.p
        z = state[:, : p.d]
        s = torch.cat([z, t.to(z.dtype).expand(z.shape[0], 1)], dim=1)
        grad, lap = self.potential.grad_and_laplacian(s)
        gx, gt = grad[:, :-1], grad[:, -1]
        gain = p.control_gain**2 / (4 * p.running_weight)
        residual = (gt + 0.5 * p.sigma**2 * lap - gain * (gx * gx).sum(1)).abs()
        if self.controlled:
            u = -(p.control_gain / (2 * p.running_weight)) * gx
            dz, running = p.control_gain * u, p.running_weight * (u * u).sum(1)
        else:
            dz, running = torch.zeros_like(z), torch.zeros_like(residual)
        return torch.cat([dz, running.unsqueeze(1), residual.unsqueeze(1)], dim=1)


def _diffusion(problem: SOCProblem):
    def g(t, state):
        out = torch.zeros_like(state)
        out[:, : problem.d] = problem.sigma
        return out

    return g


def rollout(ctx_precision, dynamics: SOCDynamics, problem: SOCProblem, paths: int, steps: int,
            gen: torch.Generator, device, dtype):
    """Euler-Maruyama of the augmented state from z0; returns the trajectory (steps+1, paths, d+2)."""
    state0 = torch.zeros(paths, problem.d + 2, dtype=dtype, device=device)
    state0[:, : problem.d] = problem.z0
    t = torch.linspace(0.0, problem.T, steps + 1, dtype=dtype, device=device)
    dw = (torch.randn(steps, paths, problem.d + 2, generator=gen, dtype=torch.float64)
          * math.sqrt(problem.T / steps)).to(device, dtype)
    return sdeint(dynamics, _diffusion(problem), state0, t, dw, precision=ctx_precision)


def _terminal(problem: SOCProblem, z: torch.Tensor) -> torch.Tensor:
    return problem.terminal_weight * torch.log(0.5 * (1.0 + ((z - problem.x_ref) ** 2).sum(1)))


@TASKS.register_instance("soc-100d")
class SOC100D(AbstractTask):
    name = "soc-100d"
    Params = SOCParams
    kind = "sde"
    metric_names: ClassVar[tuple[str, ...]] = (
        "control_objective", "control_objective_stderr", "value_reference", "gap_rel", "gap_closed",
        "uncontrolled_objective",
        "value_at_start",
        "hjb_residual", "fwd_s", "bwd_s", "iter_s", "total_s", "iters_done", "peak_mem_gib",
    )
    curve = CurveSpec("control_objective", "lower", 0.001, relative=True,
                      what="J of the learned feedback on fresh 40-step paths; tolerance 0.1 % of |J|")
    summary = "100-D stochastic optimal control, value network + PMP feedback vs random walk, exact Cole-Hopf value"
    gate_rules: ClassVar[dict[str, Rule]] = {
        "control_objective": Rule("ztest", "both", 4.0, stderr="control_objective_stderr"),
        "hjb_residual": Rule("relative", "lower", 0.10, atol=1e-3),
        "value_at_start": Rule("relative", "both", 0.05, atol=1e-3),
    }

    def reference(self, params: SOCParams) -> dict[str, float]:
        return {"value_reference": value_cole_hopf(params.control_problem())}

    def run(self, params: SOCParams, ctx: CellContext) -> dict[str, float]:
        device, master = ctx.device, ctx.precision.master
        problem = params.control_problem()
        gen = torch.Generator().manual_seed(ctx.seed)
        torch.manual_seed(ctx.seed)
        potential = OTFlowPotential(problem.d, params.width, params.n_layers, params.rank).to(device, master)
        train_dynamics = SOCDynamics(potential, problem, controlled=params.sampler == "pmp")
        eval_dynamics = SOCDynamics(potential, problem, controlled=True)
        optimizer = torch.optim.Adam(potential.parameters(), lr=params.lr)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, params.lr_step, params.lr_gamma)
        history: list[tuple[int, float]] = []

        def make_forward(it: int):
            def forward():
                traj = rollout(ctx.precision, train_dynamics, problem, params.batch, ctx.steps, gen, device, master)
                final = traj[-1].to(master)
                z_T, running, residual = final[:, : problem.d], final[:, problem.d], final[:, problem.d + 1]
                terminal = _terminal(problem, z_T)
                s_T = torch.cat([z_T, torch.full_like(z_T[:, :1], problem.T)], 1)
                mismatch = (potential(s_T) - terminal).abs()
                cost = (running + terminal).mean() if params.sampler == "pmp" else torch.zeros((), device=device)
                return params.alpha * cost + params.beta_hjb * residual.mean() + params.beta_terminal * mismatch.mean()
            return forward

        def evaluate_now(iterations_done: int) -> float:
            history.append((iterations_done, self._objective(params, problem, eval_dynamics, gen, device, master)[0]))
            return history[-1][1]

        training = TrainingLoop(ctx, optimizer, after_step=schedule.step,
                                state={"potential": potential, "schedule": schedule, "paths": gen,
                                       "history": history},
                                curve=self.curve, evaluate=evaluate_now, eval_every=params.val_every,
                                evaluate_at_start=False).run(
            params.iterations, make_forward)
        objective, stderr, residual, trajectories = self._objective(
            params, problem, eval_dynamics, gen, device, master, keep=64)
        no_control = SOCDynamics(potential, problem, controlled=False)  # the u = 0 baseline, fresh paths too
        uncontrolled = self._objective(params, problem, no_control, gen, device, master)[0]
        reference = self.reference(params)["value_reference"]
        with torch.no_grad():
            s0 = torch.full((1, problem.d + 1), problem.z0, dtype=master, device=device)
            s0[0, -1] = 0.0
            start_value = float(potential(s0))
        path = ctx.artifact_path("curves", ".npz")
        if path is not None:
            np.savez_compressed(path, iterations=np.array([h[0] for h in history]),
                                objective=np.array([h[1] for h in history]), reference=np.array(reference),
                                trajectories_xy=trajectories, x_ref=np.array(problem.x_ref))
        ctx.extra["reference"] = "Cole-Hopf value, 2-D log-space quadrature (suite/references/cole_hopf.py)"
        return {"control_objective": objective, "control_objective_stderr": stderr, "value_reference": reference,
                "gap_rel": (objective - reference) / abs(reference), "value_at_start": start_value,
                # the fraction of doing nothing's optimality gap that the learned feedback closes (1 = optimal)
                "gap_closed": (uncontrolled - objective) / (uncontrolled - reference),
                "uncontrolled_objective": uncontrolled,
                "hjb_residual": residual, **training}

    def _objective(self, params, problem, dynamics, gen, device, dtype, keep: int = 0):
        """J of the learned feedback on fresh paths (val_steps Euler steps, fp32/fp64), its s.e., the mean
        integrated |HJB residual|, and the first two coordinates of `keep` trajectories."""
        with torch.no_grad():
            traj = rollout("fp64" if dtype == torch.float64 else "fp32", dynamics, problem, params.val_paths,
                           params.val_steps, gen, device, dtype)
        final = traj[-1].double()
        per_path = final[:, problem.d] + _terminal(problem, final[:, : problem.d])
        kept = traj[:, :keep, :2].double().cpu().numpy() if keep else None
        return (float(per_path.mean()), float(per_path.std() / math.sqrt(per_path.numel())),
                float(final[:, problem.d + 1].mean()), kept)
