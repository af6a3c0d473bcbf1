"""Backend `torchode`: fixed steps through torchode's AutoDiffAdjoint (backprop through the steps).

torchode has no RK4, and a custom tableau needs an embedded error row; with a FixedStepController the
error row is never used, so every ctbench tableau is given one (Euler's weights) and runs as is. The
state must be 2-D (batch, features): the adapter flattens each state component to (batch, -1) and
concatenates them. Fixed stepping in torchode advances t ← t + dt until t passes t_end, so the adapter
places t_end and the output times exactly where that float64 recurrence lands after N steps (no extra
step can appear). Optional dependency: `pip install 'ctbench[torchode]'`; without it, cells are
`unsupported`.
"""

from __future__ import annotations

import importlib

import torch

from suite.backends._base import BACKENDS, AbstractBackend, AutocastSolver, Capabilities
from suite.deadline import check_deadline
from suite.engine import METHODS, get_method

_STEP_CLASSES: dict[str, type] = {}


def _torchode():
    return importlib.import_module("torchode")


def _step_class(method: str) -> type:
    """A torchode ExplicitRungeKutta subclass that runs our tableau (built once per method)."""
    if method in _STEP_CLASSES:
        return _STEP_CLASSES[method]
    rk = importlib.import_module("torchode.single_step_methods.runge_kutta")
    interp = importlib.import_module("torchode.interpolation")
    tab = get_method(method)
    c, a, b = tab.floats()
    euler_error_row = [1.0] + [0.0] * (len(b) - 1)
    tableau = rk.ButcherTableau.from_lists(c=c, a=[list(r) for r in a], b=b, b_low_order=euler_error_row)

    class TableauMethod(rk.ExplicitRungeKutta):
        def __init__(self, term=None):
            super().__init__(term, tableau)

        def convergence_order(self):
            return tab.order

        def build_interpolation(self, data):
            return interp.ThirdOrderPolynomialInterpolation.from_k(data.t0, data.dt, data.y0, data.y1, data.k)

    TableauMethod.__name__ = f"Ctbench_{method.replace('-', '_')}"
    _STEP_CLASSES[method] = TableauMethod
    return TableauMethod


def _landing_times(t: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Times where `t ← t + dt` (float64, as torchode iterates) lands after each of N uniform steps."""
    n = t.shape[0] - 1
    t0, t1 = float(t[0]), float(t[-1])
    dt = (t1 - t0) / n
    times, s = [t0], t0
    for _ in range(n):
        s = s + dt
        times.append(s)
    return torch.tensor(times, dtype=torch.float64), dt


class TorchodeSolver(AutocastSolver):
    def odeint(self, func, y0, t, params=None):
        to = _torchode()
        is_tuple = isinstance(y0, tuple)
        comps = list(y0) if is_tuple else [y0]
        batch = comps[0].shape[0] if comps[0].dim() > 0 else 0
        if batch == 0 or any(c.dim() == 0 or c.shape[0] != batch for c in comps):
            raise ValueError("torchode needs every state component to share a leading batch dimension")
        spans = [c[0].numel() for c in comps]
        shapes = [c.shape for c in comps]
        diffs = t[1:] - t[:-1]
        if not torch.allclose(diffs, diffs[0].expand_as(diffs), rtol=1e-5, atol=1e-7):
            raise ValueError("the torchode adapter needs a uniform grid (FixedStepController has one dt)")
        times, dt = _landing_times(t)
        device = comps[0].device

        def split(flat: torch.Tensor):
            parts = torch.split(flat, spans, dim=1)
            out = [p.reshape(s) for p, s in zip(parts, shapes)]
            return tuple(out) if is_tuple else out[0]

        def vf(t_batch: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
            check_deadline()
            value = func(t_batch[0].to(t.dtype), split(flat))
            values = list(value) if is_tuple else [value]
            return torch.cat([v.reshape(batch, -1) for v in values], dim=1)

        y_flat = torch.cat([c.reshape(batch, -1) for c in comps], dim=1)
        term = to.ODETerm(vf)
        step = _step_class(self.method)(term=term)
        solver = to.AutoDiffAdjoint(step, to.FixedStepController())
        t_eval = times.to(device).expand(batch, -1)
        problem = to.InitialValueProblem(y0=y_flat, t_start=t_eval[:, 0], t_end=t_eval[:, -1], t_eval=t_eval)
        with self.autocast(device):
            solution = solver.solve(problem, dt0=torch.full((batch,), dt, dtype=torch.float64, device=device))
        steps = solution.stats["n_steps"]
        if int(steps.max()) != t.shape[0] - 1:  # the scheme must be the cell's: exactly N steps
            raise RuntimeError(f"torchode took {int(steps.max())} steps instead of {t.shape[0] - 1} (this is a bug)")
        ys = solution.ys.transpose(0, 1)  # (n_eval, batch, features)
        parts = torch.split(ys, spans, dim=2)
        out = [p.reshape(t.shape[0], *s) for p, s in zip(parts, shapes)]
        return tuple(out) if is_tuple else out[0]


@BACKENDS.register_instance("torchode")
class TorchodeBackend(AbstractBackend):
    name = "torchode"
    requires = "torchode"
    solver_class = TorchodeSolver
    summary = "torchode fixed steps (FixedStepController), AutoDiffAdjoint: backprop through the steps"
    caps = Capabilities(
        methods=frozenset(METHODS.names()),
        precisions=frozenset({"fp64", "fp32", "tf32", "bf16", "fp16"}),
        scalings=frozenset({"none", "grad"}),
        gradient="discretize-then-optimize (autograd through the steps)",
        notes=("low precision through torch.autocast; state flattened to (batch, features)",),
    )
