"""Backend `engine`: ctbench's own mixed-precision solver (suite.engine)."""

from __future__ import annotations

import torch

from suite.backends._base import BACKENDS, AbstractBackend, AbstractSolver, Capabilities
from suite.engine import ENGINE_SCALINGS, METHODS, SDE_METHODS, SolveStats, odeint, sdeint
from suite.precision import PRECISIONS


class EngineSolver(AbstractSolver):
    def odeint(self, func, y0, t, params=None):
        stats = SolveStats()
        self.last_stats = stats
        return odeint(
            func, y0, t, method=self.method, precision=self.precision, scaling=self.scaling,
            params=params, stats=stats,
        )

    @property
    def sde_type(self):
        return SDE_METHODS.get(self.method)

    def estimator_label(self) -> str:
        name = "dto-em" if self.sde_type == "ito" else "dto-heun"
        return name if self.precision.name == "fp64" else f"engine-{name} ({self.precision.name})"

    def sdeint(self, problem, y0, t, dw):
        drift = problem.drift_for(SDE_METHODS[self.method])
        return sdeint(drift, problem.diffusion, y0, t, dw, method=self.method, noise=problem.noise,
                      precision=self.precision)

    def autocast(self, device):
        # The engine's policy is explicit; make sure an outer region cannot change the loss either.
        return torch.autocast(torch.device(device).type, enabled=False)


@BACKENDS.register_instance("engine")
class EngineBackend(AbstractBackend):
    name = "engine"
    summary = "ctbench mixed-precision engine: f low, state high, 16-bit trajectory, discrete adjoint"
    caps = Capabilities(
        methods=frozenset(METHODS.names()),
        precisions=frozenset(PRECISIONS.names()),
        scalings=frozenset(ENGINE_SCALINGS),
        gradient="discretize-then-optimize (discrete adjoint, recomputed per step; SDEs: autograd through steps)",
        sde_methods=frozenset(SDE_METHODS),
    )

    solver_class = EngineSolver

    def versions(self) -> dict[str, str]:
        import suite

        return {"ctbench-engine": suite.__version__}
