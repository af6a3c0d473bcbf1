"""timeout_s reaches inside a solve: every backend stops at its next step or field call once the cell's
deadline has passed, in the forward and in the backward, and an in-process cell whose one solve would take
hours is recorded `timeout` and the run goes on (issue 21, D)."""

from __future__ import annotations

import time

import pytest
import torch
from stubs import cell

from suite.backends import BACKENDS, get_backend
from suite.cell import run_cell
from suite.deadline import CellTimeout, cell_deadline, check_deadline
from suite.engine import SDEProblem

ODE_BACKENDS = [n for n, b in BACKENDS.items() if "rk4" in b.caps.methods and not b.missing_dependency()]
SDE_BACKENDS = [(n, sorted(b.caps.sde_methods)[0]) for n, b in BACKENDS.items()
                if b.caps.sde_methods and not b.missing_dependency()]


class Decay(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, t, y):
        return -self.k * y


def _batch() -> torch.Tensor:
    return torch.ones(2, 1)  # torchode wants a batch dimension


# Backends whose backward calls the field again (a discrete or continuous adjoint); the others backpropagate
# through the recorded graph in C++, which no Python check reaches: its length is that of the checked forward.
BACKWARD_CALLS_FIELD = {"engine", "engine-autocast", "torchdiffeq-adjoint"}


@pytest.mark.parametrize("name", ODE_BACKENDS)
def test_every_ode_backend_stops_inside_the_forward_and_the_adjoints_inside_the_backward(name):
    solver = get_backend(name).solver("rk4", "fp32", "none")
    field = Decay()
    with cell_deadline(time.monotonic() - 1.0), pytest.raises(CellTimeout):  # already past: the first step stops
        solver.odeint(field, _batch(), torch.linspace(0, 1, 1001))
    trajectory = solver.odeint(field, _batch(), torch.linspace(0, 1, 101))  # no deadline: runs
    loss = trajectory[-1].sum()
    if name not in BACKWARD_CALLS_FIELD:
        return
    with cell_deadline(time.monotonic() - 1.0), pytest.raises(CellTimeout):
        loss.backward()


@pytest.mark.parametrize("name,method", SDE_BACKENDS)
def test_every_sde_backend_stops_inside_the_solve(name, method):
    solver = get_backend(name).solver(method, "fp32", "none")
    problem = SDEProblem(drift=lambda t, x: 0.1 * x, diffusion=lambda t, x: 0.2 * x,
                         diffusion_dx=lambda t, x: torch.full_like(x, 0.2))
    t = torch.linspace(0, 1, 1001)
    dw = torch.randn(1000, 4, 1) * (t[1] - t[0]).sqrt()
    y0 = torch.ones(4, 1, requires_grad=True)
    with cell_deadline(time.monotonic() - 1.0), pytest.raises(CellTimeout):
        out = solver.sdeint(problem, y0, t, dw)
        out[-1].sum().backward()


def test_outside_a_cell_there_is_no_deadline():
    check_deadline()
    with cell_deadline(time.monotonic() + 3600):
        check_deadline()
    check_deadline()


@pytest.mark.parametrize("backend", ["engine", "torchdiffeq"])
def test_a_cell_whose_one_solve_takes_many_minutes_is_recorded_timeout(backend):
    """stiff-rk4 at a million steps (minutes on a CPU) and timeout_s = 1: the task checks the deadline only
    between repetitions, the solve checks it at every step, so the cell ends as `timeout`."""
    outcome = run_cell(cell(backend, timeout_s=1.0, steps=1_000_000))
    assert outcome["status"] == "timeout", outcome["reason"]
    assert "timeout_s" in outcome["reason"]
