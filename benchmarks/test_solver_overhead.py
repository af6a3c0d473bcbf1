"""pytest-benchmark: the solver's own cost per step on a tiny field (see solver_overhead.py). `nox -s perf`.

The deterministic operation counts go into extra_info (what a gate should watch); the timed function is
one forward + backward of a 20-step solve, whose time is mostly the solver's overhead at this size."""

from __future__ import annotations

import pytest
import torch
from solver_overhead import TinyMLP, _solve_and_backward, measure_ops

pytestmark = pytest.mark.bench


@pytest.mark.parametrize(("backend", "precision", "scaling"), [
    ("engine", "fp32", "none"), ("engine", "fp16", "dynamic"), ("torchdiffeq", "fp32", "none"),
])
@pytest.mark.parametrize("n_params", [2, 20])
def test_solver_overhead(benchmark, backend, precision, scaling, n_params):
    ops = measure_ops(backend, n_params, steps=10, precision=precision, scaling=scaling)
    benchmark.extra_info.update({k: ops[k] for k in ("solver_ops_per_step_fwd", "solver_ops_per_step_bwd")})
    torch.manual_seed(0)
    field = TinyMLP(layers=n_params // 2)
    y0 = torch.randn(4, 8, requires_grad=True)
    forward, backward = _solve_and_backward(backend, "rk4", precision, scaling, field, y0, torch.linspace(0, 1, 21))
    benchmark.pedantic(lambda: backward(forward()), rounds=10, warmup_rounds=2)
