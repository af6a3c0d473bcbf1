"""Shared fixtures: float64 problems, temporary backend registration."""

from __future__ import annotations

import contextlib

import pytest
import torch

from suite.backends import BACKENDS


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@contextlib.contextmanager
def registered_backend(name: str, backend):
    BACKENDS.add(name, backend)
    try:
        yield backend
    finally:
        BACKENDS.remove(name)


class MLPField(torch.nn.Module):
    """A small time-dependent MLP vector field: f(t, y) = W2 tanh(W1 [y, t] + b1) + b2."""

    def __init__(self, dim: int = 3, width: int = 8, dtype=torch.float64) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(dim + 1, width, dtype=dtype)
        self.l2 = torch.nn.Linear(width, dim, dtype=dtype)

    def forward(self, t, y):
        tt = t.to(y.dtype).expand(*y.shape[:-1], 1)
        return self.l2(torch.tanh(self.l1(torch.cat([y, tt], dim=-1))))


class TupleField(torch.nn.Module):
    """A CNF-like tuple state (z, logp): dz = f(z), dlogp = -sum(z * dz) (depends on both)."""

    def __init__(self, dim: int = 2, dtype=torch.float64) -> None:
        super().__init__()
        self.inner = MLPField(dim, 6, dtype)

    def forward(self, t, state):
        z, logp = state
        dz = self.inner(t, z)
        return dz, -(z * dz).sum(-1, keepdim=True) + 0.1 * logp


@pytest.fixture
def mlp_field():
    return MLPField()


from stubs import stubs  # noqa: E402,F401  (the fixture, for every test module)
