"""The backend axis: how an ODE is integrated and differentiated, behind one call signature."""

from __future__ import annotations

import abc
import contextlib
import importlib
import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from suite.engine import OnFailure
from suite.precision import Precision, get_precision
from suite.registry import Registry

__all__ = ["Capabilities", "AbstractBackend", "AbstractSolver", "AutocastSolver", "BACKENDS", "get_backend"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can run; checked before a cell costs any compute."""

    methods: frozenset[str]
    precisions: frozenset[str]
    scalings: frozenset[str]
    devices: frozenset[str] = frozenset({"cpu", "cuda"})
    tuple_states: bool = True
    gradient: str = "discretize-then-optimize"
    notes: tuple[str, ...] = field(default_factory=tuple)
    sde_methods: frozenset[str] = frozenset()  # SDE schemes, for tasks of kind "sde"
    sde_scalings: frozenset[str] = frozenset({"none"})
    memory_settings: bool = False  # takes memory= (states, stages, checkpoint:K): the engine's ODE solver

    def for_kind(self, kind: str) -> tuple[frozenset[str], frozenset[str]]:
        """(methods, scalings) a backend offers for ODE or SDE tasks."""
        return (self.methods, self.scalings) if kind == "ode" else (self.sde_methods, self.sde_scalings)


class AbstractSolver:
    """A backend bound to one cell's method, precision and scaling."""

    naive_adjoint = False  # True for estimators known to converge to the wrong gradient (shown, not hidden)
    on_failure = OnFailure.RAISE  # what the engine's scaler does when it gives up (other solvers ignore it)

    @property
    def precision_policy(self) -> str:
        """How low precision is applied: 'cast' (the field runs on cast copies) or 'autocast'."""
        return getattr(self, "policy", "cast")

    def estimator_label(self) -> str:
        """How a gradient comparison names this solver's estimator (the SDE backends say dto-em, otd-naive, ...)."""
        return f"{type(self).__name__} ({self.method}, {self.precision.name})"

    def state_dict(self) -> dict:
        """What the solver learns across solves (the engine's adjoint scaler), for training checkpoints."""
        scaler = getattr(self, "scaler", None)
        return {"scaler": scaler.state_dict()} if hasattr(scaler, "state_dict") else {}

    def load_state_dict(self, state: dict) -> None:
        if state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])

    @property
    def sde_type(self) -> str | None:
        """'ito' or 'stratonovich': which SDE the cell's method solves (None for ODE-only solvers)."""
        return None

    def __init__(self, method: str, precision: str | Precision, scaling: str) -> None:
        self.method = method
        self.precision = get_precision(precision)
        self.scaling = scaling
        self.last_stats: dict | None = None

    def odeint(
        self,
        func: Callable,
        y0: torch.Tensor | tuple[torch.Tensor, ...],
        t: torch.Tensor,
        params: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Integrate on the grid t; return the trajectory stacked over t (torchdiffeq's convention)."""
        raise TypeError(f"{type(self).__name__} does not integrate ODEs (its cell should be unsupported)")

    def final_state(self, func: Callable, y0, t: torch.Tensor, params: Sequence[torch.Tensor] | None = None):
        """y(T) only, for a loss on the final state: `odeint(...)[-1]` here; the engine returns it in its
        accumulation dtype without keeping a second trajectory (so ∂L/∂y(T) enters the backward unquantized)."""
        traj = self.odeint(func, y0, t, params=params)
        return tuple(x[-1] for x in traj) if isinstance(traj, tuple) else traj[-1]

    def sdeint(self, problem, y0: torch.Tensor, t: torch.Tensor, dw: torch.Tensor) -> torch.Tensor:
        """Integrate the SDE `problem` on the grid t with the Brownian increments dw (SDE backends only)."""
        raise TypeError(f"{type(self).__name__} does not integrate SDEs (its cell should be unsupported)")

    def autocast(self, device: torch.device | str) -> contextlib.AbstractContextManager:
        """The autocast region a training loop should put *around the solve and the loss*.

        Backends that implement low precision through autocast return it here; the engine returns a
        disabled region because its precision policy is explicit.
        """
        return contextlib.nullcontext()

    def grad_scaler(self, device: torch.device | str) -> torch.amp.GradScaler:
        """torch's GradScaler, enabled only for scaling="grad" (a disabled one is a pass-through)."""
        kind = torch.device(device).type
        return torch.amp.GradScaler(kind, enabled=self.scaling == "grad")


class AutocastSolver(AbstractSolver):
    """Low precision the way users do it with a third-party solver: torch.autocast around solve and loss."""

    policy = "autocast"

    def autocast(self, device):
        kind = torch.device(device).type
        dtype = self.precision.autocast_dtype
        return torch.autocast(kind, enabled=False) if dtype is None else torch.autocast(kind, dtype=dtype)


class AbstractBackend(abc.ABC):
    name: str = ""
    caps: Capabilities
    summary: str = ""
    requires: str | None = None  # the optional package (and extra) a backend needs
    solver_class: type[AbstractSolver] | None = None

    def missing_dependency(self) -> str | None:
        """None when importable; otherwise the reason its cells are unsupported."""
        if self.requires is None:
            return None
        try:
            importlib.import_module(self.requires)
        except ImportError:
            return f"{self.requires} is not installed (pip install 'ctbench[{self.requires}]')"
        return None

    def versions(self) -> dict[str, str]:
        if self.requires is None:
            return {}
        try:
            return {self.requires: importlib.metadata.version(self.requires)}
        except importlib.metadata.PackageNotFoundError:
            return {}

    def unsupported_reason(
        self, *, method: str, precision: str, scaling: str, device: str, tuple_state: bool = False,
        kind: str = "ode",
    ) -> str | None:
        """Why this backend cannot run the combination, or None. Costs no compute."""
        missing = self.missing_dependency()
        if missing:
            return missing
        caps = self.caps
        methods, scalings = caps.for_kind(kind)
        if not methods:
            return f"{self.name} does not integrate {kind.upper()}s"
        checks = (
            (method, methods, "method"),
            (precision, caps.precisions, "precision"),
            (scaling, scalings, "scaling"),
            (device, caps.devices, "device"),
        )
        suffix = " for SDEs" if kind == "sde" else ""
        for value, allowed, axis in checks:
            if value not in allowed:
                return (f"{self.name} does not support {axis} {value!r}{suffix} "
                        f"(supports: {', '.join(sorted(allowed))})")
        if tuple_state and not caps.tuple_states:
            return f"{self.name} does not support tuple states"
        return None

    def solver(self, method: str, precision: str, scaling: str) -> AbstractSolver:
        """A solver bound to one cell's method, precision and scaling."""
        if self.solver_class is None:
            raise TypeError(f"backend {self.name} sets no solver_class (this is a bug)")
        return self.solver_class(method, precision, scaling)


BACKENDS: Registry[AbstractBackend] = Registry("backend", entry_point_group="ctbench.backends")


def get_backend(name: str) -> AbstractBackend:
    return BACKENDS.get(name)
