"""Stub backends for the runner's bookkeeping tests: a solver that succeeds, raises, returns NaN, runs out of
memory or sleeps, on demand; `cell` builds a stiff-rk4 cell for any backend; the `stubs` fixture registers
one stub backend per behaviour for the duration of a test (conftest makes it available everywhere)."""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest
import torch
from conftest import registered_backend

from suite.backends import AbstractBackend, AbstractSolver, Capabilities
from suite.spec import Cell
from suite.tasks.stiff_rk4 import StiffParams

CAPS = Capabilities(methods=frozenset({"rk4"}), precisions=frozenset({"fp32", "fp16"}),
                    scalings=frozenset({"none"}))


class _StubSolver(AbstractSolver):
    behaviour = "ok"
    calls = 0

    def odeint(self, func, y0, t, params=None):
        type(self).calls += 1
        if self.behaviour == "raise":
            raise RuntimeError("injected failure in the solver")
        if self.behaviour == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        if self.behaviour == "slow":
            time.sleep(0.3)
        traj = torch.stack([y0] * len(t))
        if self.behaviour == "nan":
            return traj * float("nan")
        return traj * torch.exp(-t.sum())  # differentiable, finite


def stub(behaviour: str) -> AbstractBackend:
    solver_cls = type(f"Stub_{behaviour}", (_StubSolver,), {"behaviour": behaviour, "calls": 0})

    class StubBackend(AbstractBackend):
        name = f"stub-{behaviour}"
        caps = CAPS

        def solver(self, method, precision, scaling):
            return solver_cls(method, precision, scaling)

    backend = StubBackend()
    backend.solver_cls = solver_cls
    return backend


def cell(backend: str, precision: str = "fp32", scaling: str = "none", timeout_s=None, repeats=1,
         steps: int = 399) -> Cell:
    return Cell(task="stiff-rk4", variant="published", backend=backend, method="rk4", steps=steps,
                precision=precision, scaling=scaling, seed=0, profile="smoke", device="cpu",
                params=StiffParams(repeats=repeats), spec_hash="test", timeout_s=timeout_s)


@pytest.fixture
def stubs():
    backends = {b: stub(b) for b in ("ok", "raise", "nan", "oom", "slow")}
    with ExitStack() as stack:
        for b in backends.values():
            stack.enter_context(registered_backend(b.name, b))
        yield backends
