"""Backends `torchsde` (sdeint: backprop through the steps) and `torchsde-adjoint` (sdeint_adjoint).

Both are driven by the cell's own Brownian increments through a grid Brownian motion, so they see the
same paths as every other estimator. The SDE type follows the method: euler and milstein solve the Itô
SDE, heun, midpoint and reversible_heun the Stratonovich SDE (given the Itô→Stratonovich drift). The
adjoint pairs are torchsde's: euler↔euler, milstein↔milstein, midpoint↔midpoint,
reversible_heun↔adjoint_reversible_heun. torchsde's adjoint corrects Itô drifts itself (it is not the
naive method); it is optimize-then-discretize, exact only as dt → 0. Optional dependency:
`pip install 'ctbench[torchsde]'`.
"""

from __future__ import annotations

import importlib

import torch

from suite.backends._base import BACKENDS, AbstractBackend, AbstractSolver, Capabilities
from suite.deadline import check_deadline

SDE_TYPE = {"euler": "ito", "milstein": "ito", "heun": "stratonovich", "midpoint": "stratonovich",
            "reversible_heun": "stratonovich"}
ADJOINT_METHOD = {"euler": "euler", "milstein": "milstein", "midpoint": "midpoint",
                  "reversible_heun": "adjoint_reversible_heun"}


def _grid_brownian(t: torch.Tensor, dw: torch.Tensor):
    """A torchsde BaseBrownian whose increments between grid times are exactly the given ones."""
    base = importlib.import_module("torchsde").BaseBrownian
    times = [float(x) for x in t]
    w = torch.cat([torch.zeros_like(dw[:1]), dw.cumsum(0)])  # W(t_k), (N + 1, batch, m)
    scale = max(abs(times[0]), abs(times[-1]), 1.0)

    def index(s) -> int:
        s = float(s)
        k = min(range(len(times)), key=lambda j: abs(times[j] - s))
        if abs(times[k] - s) > 1e-9 * scale:
            raise ValueError(f"torchsde asked for the Brownian motion at t={s}, between grid points; "
                             "the grid Brownian motion only knows the grid (use dt = the grid step)")
        return k

    class GridBrownian(base):
        def __call__(self, ta, tb=None, return_U=False, return_A=False):
            if return_U or return_A:
                raise ValueError("the grid Brownian motion has no Lévy area; use a method that needs none")
            if tb is None:
                return w[index(ta)]
            return w[index(tb)] - w[index(ta)]

        def __repr__(self):
            return f"GridBrownian(steps={len(times) - 1})"

        dtype = property(lambda self: dw.dtype)
        device = property(lambda self: dw.device)
        shape = property(lambda self: tuple(dw.shape[1:]))
        levy_area_approximation = property(lambda self: "none")

    return GridBrownian()


class _TorchsdeModule(torch.nn.Module):
    noise_type = "diagonal"

    def __init__(self, drift, diffusion, sde_type: str) -> None:
        super().__init__()
        self.sde_type = sde_type
        self._drift, self._diffusion = drift, diffusion

    def f(self, t, y):
        check_deadline()  # torchsde calls f once per step, forward and adjoint
        return self._drift(t, y)

    def g(self, t, y):
        return self._diffusion(t, y)


class TorchsdeSolver(AbstractSolver):
    adjoint = False

    @property
    def sde_type(self):
        return SDE_TYPE.get(self.method)

    def estimator_label(self) -> str:
        call = "sdeint_adjoint" if self.adjoint else "sdeint"
        return f"torchsde {call} ({self.sde_type}, {self.method})"

    def sdeint(self, problem, y0, t, dw):
        torchsde = importlib.import_module("torchsde")
        if problem.noise != "diagonal":
            raise ValueError(f"the torchsde adapter handles diagonal noise, got {problem.noise!r}")
        module = _TorchsdeModule(problem.drift_for(self.sde_type), problem.diffusion, self.sde_type)
        dtype = self.precision.compute
        t, dw, y0 = t.to(dtype), dw.to(dtype), y0.to(dtype)
        bm = _grid_brownian(t, dw)
        dt = float(t[1] - t[0])
        if self.adjoint:
            return torchsde.sdeint_adjoint(module, y0, t, bm=bm, method=self.method, dt=dt,
                                           adjoint_method=ADJOINT_METHOD[self.method], adjoint_params=())
        return torchsde.sdeint(module, y0, t, bm=bm, method=self.method, dt=dt)


class TorchsdeAdjointSolver(TorchsdeSolver):
    adjoint = True


_COMMON = dict(methods=frozenset(), precisions=frozenset({"fp64", "fp32"}), scalings=frozenset({"none"}),
               tuple_states=False)


@BACKENDS.register_instance("torchsde")
class TorchsdeBackend(AbstractBackend):
    name = "torchsde"
    requires = "torchsde"
    solver_class = TorchsdeSolver
    summary = "torchsde.sdeint on the cell's Brownian increments, backprop through the steps"
    caps = Capabilities(sde_methods=frozenset(SDE_TYPE), gradient="discretize-then-optimize", **_COMMON)


@BACKENDS.register_instance("torchsde-adjoint")
class TorchsdeAdjointBackend(AbstractBackend):
    name = "torchsde-adjoint"
    requires = "torchsde"
    solver_class = TorchsdeAdjointSolver
    summary = "torchsde.sdeint_adjoint (its continuous adjoint, Itô drifts corrected by torchsde)"
    caps = Capabilities(sde_methods=frozenset(ADJOINT_METHOD),
                        gradient="optimize-then-discretize (torchsde's adjoint SDE)", **_COMMON)
