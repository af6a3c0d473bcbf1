"""What a solver costs beyond the vector field: operations per step and µs per step, forward and backward.

On a GPU every operation is a kernel launch, so on launch-bound problems (small states, many steps) a
solver's own operations are its cost. This counts them with `torch.profiler` (top-level aten operations,
deterministic, device independent) and subtracts what the field and its vector-Jacobian product account
for, measured on the same field alone:

    solver ops/step (forward)  = (ops of the solve - N·s·ops(f)) / N
    solver ops/step (backward) = (ops of the backward - N·s·ops(f recorded) - N·ops(VJP of s stages)) / N

Fields: an MLP with 2 or 20 parameter tensors (1 or 10 linear layers, width 8, batch 4), so the solver's
overhead per parameter tensor shows. Wall-clock overhead uses the same subtraction with timed medians.

    python benchmarks/solver_overhead.py [--steps 20] [--json out.json]

Numbers are printed, never asserted (tests/test_engine_overhead.py checks the op counts' upper bounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from suite.backends import get_backend

STAGES = {"rk4": 4, "euler": 1, "midpoint": 2, "rk4-38": 4}


class TinyMLP(torch.nn.Module):
    """`layers` linear layers (2 parameter tensors each) with tanh between: a cheap field."""

    def __init__(self, dim: int = 8, layers: int = 1) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, t, y):
        for k, layer in enumerate(self.layers):
            y = layer(y) if k == 0 else layer(torch.tanh(y))
        return y


def _top_level_aten_ops(prof) -> int:
    """aten operations that no other aten operation called (what the Python code and autograd launched)."""
    count = 0
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        nested = False
        while parent is not None:
            if parent.name.startswith("aten::"):
                nested = True
                break
            parent = parent.cpu_parent
        count += not nested
    return count


def count_ops(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return _top_level_aten_ops(prof)


def _field_costs(field, y, t0) -> dict[str, int]:
    """Ops of f (no grad), of f with autograd recording, and of one stage's VJP."""
    params = [p for p in field.parameters() if p.requires_grad]
    with torch.no_grad():
        f_plain = count_ops(lambda: field(t0, y))
    leaf = y.detach().requires_grad_(True)
    f_grad = count_ops(lambda: field(t0, leaf))
    out = field(t0, leaf)
    seed = torch.ones_like(out)
    vjp = count_ops(lambda: torch.autograd.grad(out, [leaf, *params], seed, retain_graph=True))
    return {"f": f_plain, "f_grad": f_grad, "vjp": vjp}


def _solve_and_backward(backend: str, method: str, precision: str, scaling: str, field, y0, t):
    solver = get_backend(backend).solver(method, precision, scaling)

    def forward():
        with solver.autocast(y0.device):
            return solver.odeint(field, y0, t)

    def backward(traj):
        final = traj[-1] if not isinstance(traj, tuple) else traj[0][-1]
        torch.autograd.grad(final.float().sum(), [y0, *field.parameters()])

    return forward, backward


def _ops(backend, method, precision, scaling, field, y0, steps) -> tuple[int, int]:
    t = torch.linspace(0.0, 1.0, steps + 1)
    forward, backward = _solve_and_backward(backend, method, precision, scaling, field, y0, t)
    backward(forward())  # warm-up (registrations, caches, the learned scale)
    fwd_ops = count_ops(forward)
    traj = forward()
    return fwd_ops, count_ops(lambda: backward(traj))


def measure_ops(backend: str, n_params: int, steps: int = 20, method: str = "rk4", precision: str = "fp32",
                scaling: str = "none") -> dict:
    """Solver ops per step (forward, backward) on a TinyMLP with n_params tensors.

    Per-step figures are slopes between N and 2N steps, so once-per-solve work (casting parameters,
    building the coefficient table) does not hide in them.
    """
    torch.manual_seed(0)
    field = TinyMLP(layers=n_params // 2)
    y0 = torch.randn(4, 8, requires_grad=True)
    s = STAGES[method]
    costs = _field_costs(field, y0.detach(), torch.zeros(()))
    f1, b1 = _ops(backend, method, precision, scaling, field, y0, steps)
    f2, b2 = _ops(backend, method, precision, scaling, field, y0, 2 * steps)
    # A solver that records the forward graph (torchdiffeq, torchode) pays f_grad in its forward and only the
    # VJPs in its backward; the engine runs f without grad forward and recomputes f_grad in the backward.
    recomputes = backend.startswith("engine")
    f_forward = costs["f"] if recomputes else costs["f_grad"]
    f_backward = (costs["f_grad"] + costs["vjp"]) if recomputes else costs["vjp"]
    row = {
        "backend": backend, "param_tensors": n_params, "method": method, "precision": precision,
        "scaling": scaling, "steps": steps,
        "solver_ops_per_step_fwd": (f2 - f1) / steps - s * f_forward,
        "solver_ops_per_step_bwd": (b2 - b1) / steps - s * f_backward,
        "field_ops": costs,
    }
    return row


def measure(backend: str, n_params: int, steps: int = 20, method: str = "rk4", precision: str = "fp32",
            scaling: str = "none", repeats: int = 7) -> dict:
    """measure_ops plus the solver's µs per step (slopes too, with the field's own time subtracted)."""
    row = measure_ops(backend, n_params, steps, method, precision, scaling)
    torch.manual_seed(0)
    field = TinyMLP(layers=n_params // 2)
    y0 = torch.randn(4, 8, requires_grad=True)
    row.update(_timing(backend, method, precision, scaling, field, y0, STAGES[method], steps,
                       backend.startswith("engine"), repeats))
    return row


def _median_time(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _field_times(field, y0, repeats: int, calls: int = 100) -> tuple[float, float, float]:
    """Seconds per call of f (no grad), of f recorded in a long graph, and of its VJP in that graph (one
    backward over `calls` chained evaluations: the kernels, without a per-call autograd engine start)."""
    params = list(field.parameters())
    t0 = torch.zeros(())

    def plain():
        with torch.no_grad():
            y = y0
            for _ in range(calls):
                y = field(t0, y)

    def chain():
        y = y0.detach().requires_grad_(True)
        out = y
        for _ in range(calls):
            out = field(t0, out)
        return y, out

    def recorded():
        chain()

    def both():
        y, out = chain()
        torch.autograd.grad(out.sum(), [y, *params])

    per_f = _median_time(plain, repeats) / calls
    per_grad = _median_time(recorded, repeats) / calls
    per_vjp = _median_time(both, repeats) / calls - per_grad
    return per_f, per_grad, per_vjp


def _timing(backend, method, precision, scaling, field, y0, s, steps, recomputes, repeats) -> dict:
    per_f, per_grad, per_vjp = _field_times(field, y0.detach(), repeats)
    results = {}
    for n in (steps, 2 * steps):
        t = torch.linspace(0.0, 1.0, n + 1)
        forward, backward = _solve_and_backward(backend, method, precision, scaling, field, y0, t)
        backward(forward())
        fwd = _median_time(forward, repeats)
        both = _median_time(lambda forward=forward, backward=backward: backward(forward()), repeats)
        results[n] = (fwd, both - fwd)
    fwd = (results[2 * steps][0] - results[steps][0]) / steps
    bwd = (results[2 * steps][1] - results[steps][1]) / steps
    f_fwd = per_f if recomputes else per_grad
    f_bwd = (per_grad + per_vjp) if recomputes else per_vjp
    return {
        "solver_us_per_step_fwd": 1e6 * (fwd - s * f_fwd),
        "solver_us_per_step_bwd": 1e6 * (bwd - s * f_bwd),
        "us_per_step_fwd": 1e6 * fwd, "us_per_step_bwd": 1e6 * bwd,
        "field_us": {"f": 1e6 * per_f, "f_recorded": 1e6 * per_grad, "vjp": 1e6 * per_vjp},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="N: per-step figures are slopes between N and 2N")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # overhead, not parallel compute: one thread is the honest unit
    rows = []
    configs = [("engine", "none"), ("engine", "dynamic"), ("torchdiffeq", "none"), ("torchode", "none")]
    for n_params in (2, 20):
        for backend, scaling in configs:
            precision = "fp16" if scaling == "dynamic" else "fp32"
            if get_backend(backend).missing_dependency():
                continue
            row = measure(backend, n_params, args.steps, "rk4", precision, scaling, args.repeats)
            rows.append(row)
            print(f"{backend:12s} {scaling:8s} {precision:5s} params={n_params:2d}  solver ops/step fwd "
                  f"{row['solver_ops_per_step_fwd']:6.1f} bwd {row['solver_ops_per_step_bwd']:6.1f}   solver µs/step "
                  f"fwd {row['solver_us_per_step_fwd']:7.1f} bwd {row['solver_us_per_step_bwd']:7.1f}   (all µs/step "
                  f"fwd {row['us_per_step_fwd']:7.1f} bwd {row['us_per_step_bwd']:7.1f})", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"torch": torch.__version__, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
