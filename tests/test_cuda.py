"""CUDA-only checks (skipped without a GPU): same numbers as on CPU, and no per-step host synchronization."""

from __future__ import annotations

import warnings

import pytest
import torch

from suite.engine import SolveStats, odeint
from suite.tasks.stiff_rk4 import StiffParams, closed_form, vector_field

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _stiff(device, precision="fp16", scaling="dynamic"):
    p = StiffParams()
    theta = torch.tensor(p.theta, device=device, requires_grad=True)
    y0 = torch.tensor([p.y0], dtype=torch.float64).to(torch.float16).float().to(device).requires_grad_(True)
    stats = SolveStats()
    traj = odeint(vector_field(theta), y0, torch.linspace(0, p.T, 400, device=device), precision=precision,
                  scaling=scaling, params=[theta], stats=stats)
    (0.5 * traj[-1].double() ** 2).sum().backward()
    return y0.grad.item(), theta.grad.double().cpu(), stats


def test_stiff_fp16_dynamic_on_cuda_matches_the_reference():
    exact = closed_form(StiffParams())
    g_y0, g_theta, _ = _stiff("cuda")
    assert abs(g_y0 - exact["grad_y0"]) / exact["grad_y0"] < 2e-2
    for k in range(3):
        assert abs(g_theta[k].item() - exact[f"grad_theta{k + 1}"]) / abs(exact[f"grad_theta{k + 1}"]) < 2e-2


def test_no_host_sync_per_step():
    """torch's sync debug mode sees only the once-per-round read of the step counter."""
    field = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 8)).cuda()
    y0 = torch.randn(64, 8, device="cuda", requires_grad=True)
    t = torch.linspace(0, 1, 51, device="cuda")
    stats = SolveStats()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            traj = odeint(lambda s, y: field(y), y0, t, precision="bf16", scaling="dynamic",
                          params=list(field.parameters()), stats=stats)
            traj[-1].float().sum().backward()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    assert stats.n_host_syncs_backward == 1 + (stats.n_retries > 0)
    assert syncs <= stats.n_host_syncs_backward + 1, [str(w.message) for w in caught]
