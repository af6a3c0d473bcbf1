"""Task `sde-adjoint-bias`: which SDE gradient estimators converge to the truth (seed slide "Differentiating
Through SDEs").

J(x0) = E[Φ(X_T)], Φ(x) = x, for (a) geometric Brownian motion dX = μX dt + σX dW and (b) the CEV model
dX = σ|X|^β dW. Each cell estimates dJ/dx0 from `paths` seeded paths (the same increments for every
estimator with the same seed and step count) as the mean of per-path derivatives, with its standard error.
References: both in closed form. GBM: 0.640, and 1.365 for the naive adjoint (suite/references/gbm.py). CEV
(β > 1): a Bessel-process identity gives E[X_T] and its gradient, 1 - 9e^-8 ≈ 0.996981 for β = 1.5, σ = 0.5
(suite/references/cev.py). A float64 DTO Euler-Maruyama Monte Carlo of the CEV gradient on a fine grid is
kept beside it as a convergence check (its distance to the closed form is recorded), never as the truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from pydantic import Field

from suite.engine import SDEProblem, sdeint
from suite.measure import Stopwatch
from suite.references.cev import CEV
from suite.references.gbm import GBM
from suite.rules import Rule
from suite.tasks._base import TASKS, AbstractTask, CellContext, NonFiniteResult, TaskParams
from suite.tasks._training import SCALE


class SDEBiasParams(TaskParams):
    problem: Literal["gbm", "cev"] = "gbm"
    mu: float = math.log(0.64)
    sigma: float = 1.2308
    beta: float = 1.5
    x0: float = Field(1.0, gt=0)
    T: float = Field(1.0, gt=0)
    paths: int = Field(100_000, ge=2, json_schema_extra=SCALE)
    reference_paths: int = Field(400_000, ge=2, json_schema_extra=SCALE, description="CEV Monte Carlo check only")
    reference_steps: int = Field(2048, ge=1, json_schema_extra=SCALE, description="CEV Monte Carlo check only")


def sde_problem(params: SDEBiasParams) -> SDEProblem:
    if params.problem == "gbm":
        mu, sigma = params.mu, params.sigma
        return SDEProblem(lambda t, x: mu * x, lambda t, x: sigma * x, lambda t, x: torch.full_like(x, sigma))
    sigma, beta = params.sigma, params.beta
    # |x|^β keeps the diffusion defined if a coarse Euler step ever crosses zero (the exact process does not).
    return SDEProblem(
        lambda t, x: torch.zeros_like(x),
        lambda t, x: sigma * x.abs() ** beta,
        lambda t, x: sigma * beta * x.abs() ** (beta - 1) * torch.sign(x),
    )


def increments(steps: int, paths: int, T: float, seed: int) -> torch.Tensor:
    """Brownian increments (steps, paths, 1) in float64, a function of (seed, steps, paths) only."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(steps, paths, 1, generator=gen, dtype=torch.float64) * math.sqrt(T / steps)


def pathwise_gradients(solver, problem: SDEProblem, params: SDEBiasParams, dw: torch.Tensor, device, dtype):
    """Per-path dΦ(X_T)/dx0 from one solve with a per-path initial-state leaf; returns (grads, fwd_s, bwd_s)."""
    watch = Stopwatch(device)
    t = torch.linspace(0.0, params.T, dw.shape[0] + 1, dtype=dtype, device=device)
    x0 = torch.full((dw.shape[1], 1), params.x0, dtype=dtype, device=device, requires_grad=True)
    with watch("fwd_s"):
        final = solver.sdeint(problem, x0, t, dw.to(device=device, dtype=dtype))[-1]
    with watch("bwd_s"):
        (grads,) = torch.autograd.grad(final.to(dtype).sum(), x0)
    return grads.double().squeeze(1), watch.total()


MAX_DROPPED_FRACTION = 1e-3


_CEV_CACHE: dict[tuple[SDEBiasParams, str], tuple[float, float, int]] = {}


def cev_reference(params: SDEBiasParams, device: str = "cpu",
                  check: Callable[[], None] | None = None) -> tuple[float, float, int]:
    """(estimate, standard error, paths dropped) of dJ/dx0 for CEV: float64 DTO Euler-Maruyama, fine grid.

    Euler-Maruyama is known to diverge for superlinear diffusions (Hutzenthaler, Jentzen & Kloeden 2011):
    a rare path explodes to inf. Those paths are dropped from the reference and counted in the record;
    more than MAX_DROPPED_FRACTION of them makes the reference fail instead. `check` runs between chunks
    (the cell's deadline); a finished reference is cached for the other cells of the run."""
    key = (params, device)
    if key not in _CEV_CACHE:
        _CEV_CACHE[key] = _cev_reference(params, device, check or (lambda: None))
    return _CEV_CACHE[key]


def _cev_reference(params: SDEBiasParams, device: str, check: Callable[[], None]) -> tuple[float, float, int]:
    problem = sde_problem(params)
    chunk = 50_000
    grads = []
    for start in range(0, params.reference_paths, chunk):
        check()
        n = min(chunk, params.reference_paths - start)
        dw = increments(params.reference_steps, n, params.T, seed=10_000 + start).to(device)
        t = torch.linspace(0.0, params.T, params.reference_steps + 1, dtype=torch.float64, device=device)
        x0 = torch.full((n, 1), params.x0, dtype=torch.float64, device=device, requires_grad=True)
        final = sdeint(problem.drift, problem.diffusion, x0, t, dw, precision="fp64")[-1]
        (g,) = torch.autograd.grad(final.sum(), x0)
        grads.append(g.squeeze(1))
    g = torch.cat(grads)
    finite = g[torch.isfinite(g)]
    return float(finite.mean()), float(finite.std() / math.sqrt(finite.numel())), int(g.numel() - finite.numel())


@TASKS.register_instance("sde-adjoint-bias")
class SDEAdjointBias(AbstractTask):
    name = "sde-adjoint-bias"
    Params = SDEBiasParams
    kind = "sde"
    metric_names: ClassVar[tuple[str, ...]] = (
        "grad_estimate", "grad_stderr", "grad_reference", "grad_expected", "bias", "rel_err_grad",
        "fwd_s", "bwd_s",
    )
    summary = "dJ/dx0 of E[X_T] for GBM and CEV: DTO vs naive and corrected OTD, against exact references"
    gate_rules: ClassVar[dict[str, Rule]] = {
        "grad_estimate": Rule("ztest", "both", 4.0, stderr="grad_stderr"),
        "mc_reference": Rule("ztest", "both", 4.0, stderr="mc_reference_stderr"),
    }

    def reference(self, params: SDEBiasParams, device: str = "cpu",
                  check: Callable[[], None] | None = None) -> dict[str, float]:
        """Closed forms; for CEV also the Monte Carlo check (estimate, s.e., dropped paths, error)."""
        if params.problem == "gbm":
            gbm = GBM(params.mu, params.sigma, params.T, params.x0)
            return {"grad_reference": gbm.gradient(), "naive_limit": gbm.naive_adjoint_limit()}
        exact = CEV(params.sigma, params.beta, params.x0, params.T).gradient()
        estimate, stderr, dropped = cev_reference(params, device, check)
        if dropped > MAX_DROPPED_FRACTION * params.reference_paths:
            raise NonFiniteResult(
                f"the CEV Monte Carlo check lost {dropped} of {params.reference_paths} Euler paths to explosion "
                f"({params.reference_steps} steps); raise reference_steps"
            )
        return {"grad_reference": exact, "mc_reference": estimate, "mc_reference_stderr": stderr,
                "mc_reference_error": estimate - exact, "mc_reference_dropped_paths": dropped}

    def run(self, params: SDEBiasParams, ctx: CellContext) -> dict[str, float]:
        dtype = ctx.precision.master
        ctx.check_deadline()
        dw = increments(ctx.steps, params.paths, params.T, ctx.seed)
        ctx.check_deadline()
        grads, timing = pathwise_gradients(ctx.solver, sde_problem(params), params, dw, ctx.device, dtype)
        ctx.check_deadline()
        ctx.report_progress(0.8)
        estimate = float(grads.mean())
        if not math.isfinite(estimate):
            raise NonFiniteResult(f"the gradient estimate is {estimate} (paths went inf/NaN in {ctx.precision.name})")
        reference = self.reference(params, str(ctx.device), check=ctx.check_deadline)
        truth = reference["grad_reference"]
        ctx.timing.update(timing)
        ctx.extra["sde_type"] = ctx.solver.sde_type
        ctx.extra["estimator"] = ctx.solver.estimator_label()
        ctx.extra["reference"] = (
            "closed form (suite/references/gbm.py)" if params.problem == "gbm" else
            "closed form via BES(δ) (suite/references/cev.py); check: float64 DTO Euler-Maruyama Monte Carlo, "
            f"{params.reference_paths} paths, {params.reference_steps} steps, "
            f"{reference['mc_reference_dropped_paths']} exploded paths dropped (mc_reference*)")
        metrics = {
            "grad_estimate": estimate, "grad_stderr": float(grads.std() / math.sqrt(grads.numel())),
            "grad_reference": truth, "bias": estimate - truth, "rel_err_grad": abs(estimate - truth) / abs(truth),
            **timing,
        }
        if not ctx.solver.naive_adjoint:
            metrics["grad_expected"] = truth
        elif "naive_limit" in reference:
            metrics["grad_expected"] = reference["naive_limit"]  # what the uncorrected adjoint converges to
        for key in ("mc_reference", "mc_reference_stderr", "mc_reference_error"):
            if key in reference:
                metrics[key] = reference[key]
        return metrics
