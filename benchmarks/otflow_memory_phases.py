"""Where the OT-Flow iteration's peak memory comes from: forward and backward measured separately (CUDA)."""

from __future__ import annotations

import sys

import torch

from suite.backends import get_backend
from suite.models.otflow_potential import OTFlowPotential
from suite.precision import tf32_mode
from suite.tasks.otflow import OTFlowField, OTFlowParams, _costs, _loss


def phases(backend: str, precision: str, width=1024, batch=512, steps=15) -> None:
    params = OTFlowParams(width=width, batch=batch)
    torch.manual_seed(0)
    potential = OTFlowPotential(63, width, 2, 10).cuda()
    field = OTFlowField(potential, 1.0)
    solver = get_backend(backend).solver("rk4", precision, "none")
    t = torch.linspace(0, 1, steps + 1, device="cuda")
    x = torch.randn(batch, 63, device="cuda") * 0.09
    gib = 2**30
    with tf32_mode(precision == "tf32"):
        for _ in range(2):
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            with solver.autocast("cuda"):
                loss = _loss(params, *_costs(solver, field, x, t, params.prior_var, torch.float32))
            fwd_peak, after_fwd = torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            loss.backward()
            bwd_peak = torch.cuda.max_memory_allocated()
            potential.zero_grad(set_to_none=True)
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            s = torch.cat([x, torch.zeros(batch, 1, device="cuda")], 1)
            potential.grad_and_laplacian(s)
        one_eval = torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()
    print(f"{backend:12s} {precision}: base {base / gib:.2f} | fwd peak {(fwd_peak - base) / gib:.2f} "
          f"held after fwd {(after_fwd - base) / gib:.2f} | bwd peak {(bwd_peak - base) / gib:.2f} GiB | "
          f"one no-grad f-eval transient {one_eval / gib:.2f} GiB", flush=True)


if __name__ == "__main__":
    for backend, precision in [("torchdiffeq", "tf32"), ("engine", "tf32"), ("engine", "bf16")]:
        phases(backend, precision, *[int(a) for a in sys.argv[1:]])
