"""Backends `torchdiffeq` (direct backprop) and `torchdiffeq-adjoint` (continuous adjoint).

Low precision is done the way users do it: `torch.autocast` around the solve and the loss, with the
state kept in y0's dtype, and torch's GradScaler for scaling="grad". Every backend must run the
cell's own tableau: torchdiffeq's 'rk4' is the 3/8 rule, so classical RK4 is added to torchdiffeq's
solver registry as a fixed-grid solver driven by our Butcher tableau, never substituted.
"""

from __future__ import annotations

import importlib

import torch

from suite.backends._base import BACKENDS, AbstractBackend, AutocastSolver, Capabilities
from suite.deadline import checked_field
from suite.engine import get_method

# Our method name -> torchdiffeq's name for the same tableau.
_NATIVE = {"euler": "euler", "midpoint": "midpoint", "heun2": "heun2", "rk4-38": "rk4"}
_REGISTERED_PREFIX = "ctbench-"
_TABLEAU_METHODS = ("rk4",)  # tableaux torchdiffeq lacks; registered on first use


def combine(base, h, coefs, ks):
    """base + h·Σ coef·k (or Σ coef·k without base), skipping zero coefficients."""
    total = None
    for coef, k in zip(coefs, ks):
        if coef != 0.0:
            term = k * coef
            total = term if total is None else total + term
    if base is None:
        return total
    return base if total is None else base + h * total


def _torchdiffeq():
    return importlib.import_module("torchdiffeq")


def _register_tableau_solver(method: str) -> str:
    """Add a FixedGridODESolver for our tableau to torchdiffeq.SOLVERS; return its registered name.

    Uses torchdiffeq internals (its SOLVERS dict and FixedGridODESolver), pinned in pyproject; a change
    there raises ImportError/AttributeError, which suite/cell.py records as an error with that message.
    """
    name = _REGISTERED_PREFIX + method
    odeint_mod = importlib.import_module("torchdiffeq._impl.odeint")
    if name in odeint_mod.SOLVERS:
        return name
    solvers_mod = importlib.import_module("torchdiffeq._impl.solvers")
    c, a, b = get_method(method).floats()

    class TableauSolver(solvers_mod.FixedGridODESolver):
        order = get_method(method).order

        def _step_func(self, func, t0, dt, t1, y0):
            ks = []
            for j in range(len(b)):
                ks.append(func(t0 + c[j] * dt, combine(y0, dt, a[j], ks)))
            return dt * combine(None, None, b, ks), ks[0]

    TableauSolver.__name__ = f"CtbenchTableau_{method.replace('-', '_')}"
    odeint_mod.SOLVERS[name] = TableauSolver
    return name


def torchdiffeq_method(method: str) -> str:
    """torchdiffeq's name for our method (registering classical RK4 when needed)."""
    if method in _NATIVE:
        return _NATIVE[method]
    if method in _TABLEAU_METHODS:
        return _register_tableau_solver(method)
    raise ValueError(f"torchdiffeq backend: no tableau for method {method!r}")


class TorchdiffeqSolver(AutocastSolver):
    adjoint = False

    def odeint(self, func, y0, t, params=None):
        tdq = _torchdiffeq()
        name = torchdiffeq_method(self.method)
        device = (y0[0] if isinstance(y0, tuple) else y0).device
        if self.adjoint and params is None:  # what odeint_adjoint would take itself from a Module (its own helper)
            params = tuple(importlib.import_module("torchdiffeq._impl.adjoint").find_parameters(func)) \
                if isinstance(func, torch.nn.Module) else ()
        field = checked_field(func)  # timeout_s reaches inside the solve and its adjoint (a plain function)
        with self.autocast(device):
            if self.adjoint:
                return tdq.odeint_adjoint(field, y0, t, method=name, adjoint_params=params)
            return tdq.odeint(field, y0, t, method=name)


class TorchdiffeqAdjointSolver(TorchdiffeqSolver):
    adjoint = True


class _TorchdiffeqBase(AbstractBackend):
    requires = "torchdiffeq"
    solver_class = TorchdiffeqSolver

    caps = Capabilities(
        methods=frozenset({*_NATIVE, *_TABLEAU_METHODS}),
        precisions=frozenset({"fp64", "fp32", "tf32", "bf16", "fp16"}),
        scalings=frozenset({"none", "grad"}),
        notes=("low precision through torch.autocast; the state stays in y0's dtype",),
    )


@BACKENDS.register_instance("torchdiffeq")
class TorchdiffeqBackend(_TorchdiffeqBase):
    name = "torchdiffeq"
    summary = "torchdiffeq.odeint, backprop through the solver steps (discretize-then-optimize)"
    solver_class = TorchdiffeqSolver


@BACKENDS.register_instance("torchdiffeq-adjoint")
class TorchdiffeqAdjointBackend(_TorchdiffeqBase):
    name = "torchdiffeq-adjoint"
    summary = "torchdiffeq.odeint_adjoint, continuous adjoint solved backwards (optimize-then-discretize)"
    solver_class = TorchdiffeqAdjointSolver
    caps = Capabilities(
        methods=_TorchdiffeqBase.caps.methods,
        precisions=_TorchdiffeqBase.caps.precisions,
        scalings=_TorchdiffeqBase.caps.scalings,
        gradient="optimize-then-discretize (continuous adjoint)",
        notes=(
            "low precision through torch.autocast around the forward solve; the backward adjoint solve "
            "runs outside the autocast region, as in a standard AMP training step",
        ),
    )
