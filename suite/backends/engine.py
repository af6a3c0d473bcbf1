"""Backends `engine` and `engine-autocast`: ctbench's own mixed-precision solver (suite.engine), one per
precision policy, so a report can separate "which solver" from "which casting".

- `engine`: the full-cast policy (the published mixed-precision algorithm): f, its parameters and the stage
  arithmetic in the compute dtype, state accumulated in fp32, trajectory stored in 16 bits.
- `engine-autocast`: the same solver, but f under torch.autocast with fp32 parameters and the stage
  arithmetic in fp32 (what torchdiffeq and torchode users get from autocast); storage stays 16-bit.

A solver instance lives for one cell: it keeps one `AdjointScaler`, so the dynamic scaling headroom learned
in one training iteration is where the next one starts.
"""

from __future__ import annotations

import torch

from suite import __version__
from suite.backends._base import BACKENDS, AbstractBackend, AbstractSolver, Capabilities
from suite.engine import (
    ENGINE_SCALINGS,
    METHODS,
    SDE_METHODS,
    AdjointScaler,
    OnFailure,
    SolveStats,
    odeint,
    sdeint,
)
from suite.precision import PRECISIONS


class EngineSolver(AbstractSolver):
    policy = "cast"

    def __init__(self, method, precision, scaling) -> None:
        super().__init__(method, precision, scaling)
        self.scaler = AdjointScaler(self.precision.compute) if scaling == "dynamic" else None
        self.on_failure = OnFailure.RAISE  # "nonfinite" when a training loop skips steps instead (GradScaler-style)
        self.memory = "states"  # what the forward keeps for the backward (suite.engine odeint's memory=)

    def odeint(self, func, y0, t, params=None, output="accumulate"):
        stats = SolveStats()
        self.last_stats = stats
        return odeint(
            func, y0, t, method=self.method, precision=self.precision, scaling=self.scaling, policy=self.policy,
            params=params, stats=stats, scaler=self.scaler, on_failure=self.on_failure, output=output,
            memory=self.memory,
        )

    def final_state(self, func, y0, t, params=None):
        return self.odeint(func, y0, t, params=params, output="final")

    @property
    def sde_type(self):
        return SDE_METHODS.get(self.method)

    def estimator_label(self) -> str:
        name = "dto-em" if self.sde_type == "ito" else "dto-heun"
        if self.policy != "cast":
            name += f"-{self.policy}"
        return name if self.precision.name == "fp64" else f"engine-{name} ({self.precision.name})"

    def sdeint(self, problem, y0, t, dw):
        drift = problem.drift_for(SDE_METHODS[self.method])
        return sdeint(drift, problem.diffusion, y0, t, dw, method=self.method, noise=problem.noise,
                      precision=self.precision, policy=self.policy)

    def autocast(self, device):
        # The engine's policy is explicit; make sure an outer region cannot change the loss either.
        return torch.autocast(torch.device(device).type, enabled=False)


class EngineAutocastSolver(EngineSolver):
    policy = "autocast"


_CAPS = Capabilities(
    methods=frozenset(METHODS.names()),
    precisions=frozenset(PRECISIONS.names()),
    scalings=frozenset(ENGINE_SCALINGS),
    gradient="discretize-then-optimize (discrete adjoint, recomputed per step; SDEs: autograd through steps)",
    sde_methods=frozenset(SDE_METHODS),
    memory_settings=True,
)


class _EngineBase(AbstractBackend):
    caps = _CAPS

    def versions(self) -> dict[str, str]:
        return {"ctbench-engine": __version__}


@BACKENDS.register_instance("engine")
class EngineBackend(_EngineBase):
    name = "engine"
    summary = "ctbench mixed-precision engine, full-cast policy: f low, state high, 16-bit trajectory"
    solver_class = EngineSolver


@BACKENDS.register_instance("engine-autocast")
class EngineAutocastBackend(_EngineBase):
    name = "engine-autocast"
    summary = "ctbench engine, autocast policy: f under torch.autocast with fp32 parameters, 16-bit trajectory"
    solver_class = EngineAutocastSolver
