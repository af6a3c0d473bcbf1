"""pytest-benchmark: engine vs torchdiffeq, MLP neural ODE (see mlp_node.py). `nox -s perf`."""

from __future__ import annotations

import pytest
import torch
from mlp_node import saved_bytes, setup, step

from suite.backends import get_backend

pytestmark = pytest.mark.bench
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("backend", ["torchdiffeq", "engine"])
def test_forward_backward(benchmark, backend, precision):
    field, y0, t = setup(DEVICE)
    solver = get_backend(backend).solver("rk4", precision, "none")
    benchmark.extra_info["saved_for_backward_mib"] = saved_bytes(solver, field, y0, t, DEVICE) / 2**20
    benchmark.extra_info["device"] = DEVICE
    benchmark.pedantic(step, args=(solver, field, y0, t, DEVICE), rounds=5, warmup_rounds=1)
