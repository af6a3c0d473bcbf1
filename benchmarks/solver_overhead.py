"""What a solver costs beyond the vector field: operations per step and µs per step, forward and backward.

On a GPU every operation is a kernel launch, so on launch-bound problems (small states, many steps) a
solver's own operations are its cost. This counts them with `torch.profiler` (top-level aten operations,
deterministic, device independent) and subtracts what the field and its vector-Jacobian product account
for, measured on the same field alone:

    solver ops/step (forward)  = (ops of the solve - N·s·ops(f)) / N
    solver ops/step (backward) = (ops of the backward - N·s·ops(f recorded) - N·ops(VJP of s stages)) / N

Fields: an MLP with 2 or 20 parameter tensors (1 or 10 linear layers, width 8, batch 4), so the solver's
overhead per parameter tensor shows. Wall-clock overhead uses the same subtraction on times: every round
times each backend at N and 2N steps and the field alone, once each (interleaved, so a machine's drift
lands on all alike), and each per-step figure is the median over rounds of that round's slope.

    python benchmarks/solver_overhead.py [--steps 40] [--repeats 15] [--json out.json]

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


def _clock(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _field_jobs(field, y0, calls: int = 100) -> dict[str, Callable[[], object]]:
    """f (no grad), f recorded in a long graph, and f recorded + its VJP in that graph (one backward over
    `calls` chained evaluations: the kernels, without a per-call autograd engine start)."""
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

    def both():
        y, out = chain()
        torch.autograd.grad(out.sum(), [y, *params])

    return {"f": plain, "f_recorded": chain, "f_and_vjp": both}


def measure_times(configs: list[tuple[str, str, str]], n_params: int, steps: int = 40, method: str = "rk4",
                  repeats: int = 15) -> dict[tuple[str, str, str], dict]:
    """µs per step, forward and backward, for each (backend, precision, scaling), and the solver's own part.

    Interleaved: every round times each backend at N and 2N steps (forward, and forward + backward) and
    the field alone, once each, so a machine's drift lands on every row alike; a per-step figure is the
    median over rounds of that round's slope (2N minus N, over N), so once-per-solve work drops out."""
    torch.manual_seed(0)
    field = TinyMLP(layers=n_params // 2)
    y0 = torch.randn(4, 8, requires_grad=True)
    s, calls = STAGES[method], 100
    jobs: dict[tuple, Callable[[], object]] = {}
    for config in configs:
        for n in (steps, 2 * steps):
            forward, backward = _solve_and_backward(config[0], method, config[1], config[2], field, y0,
                                                    torch.linspace(0.0, 1.0, n + 1))
            jobs[(config, n, "fwd")] = forward
            jobs[(config, n, "both")] = lambda forward=forward, backward=backward: backward(forward())
    for name, fn in _field_jobs(field, y0.detach(), calls).items():
        jobs[("field", name)] = fn
    for fn in jobs.values():  # warm-up: registrations, caches, the learned scale
        fn()
        fn()
    samples: dict[tuple, list[float]] = {key: [] for key in jobs}
    for _ in range(repeats):
        for key, fn in jobs.items():
            samples[key].append(_clock(fn))
    med = statistics.median
    per_f = med(samples[("field", "f")]) / calls
    per_grad = med(samples[("field", "f_recorded")]) / calls
    per_vjp = med(b - a for a, b in zip(samples[("field", "f_recorded")], samples[("field", "f_and_vjp")])) / calls
    out = {}
    for config in configs:
        fwd = [(b - a) / steps for a, b in zip(samples[(config, steps, "fwd")], samples[(config, 2 * steps, "fwd")])]
        bwd = [((d - c) - (b - a)) / steps for a, b, c, d in zip(
            samples[(config, steps, "fwd")], samples[(config, 2 * steps, "fwd")],
            samples[(config, steps, "both")], samples[(config, 2 * steps, "both")])]
        recomputes = config[0].startswith("engine")
        f_fwd = per_f if recomputes else per_grad
        f_bwd = (per_grad + per_vjp) if recomputes else per_vjp
        out[config] = {
            "us_per_step_fwd": 1e6 * med(fwd), "us_per_step_bwd": 1e6 * med(bwd),
            "solver_us_per_step_fwd": 1e6 * (med(fwd) - s * f_fwd),
            "solver_us_per_step_bwd": 1e6 * (med(bwd) - s * f_bwd),
            "field_us": {"f": 1e6 * per_f, "f_recorded": 1e6 * per_grad, "vjp": 1e6 * per_vjp},
            "repeats": repeats, "steps": [steps, 2 * steps],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="N: per-step figures are slopes between N and 2N")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds (medians over them)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # overhead, not parallel compute: one thread is the honest unit
    rows = []
    configs = [(backend, "fp16" if scaling == "dynamic" else "fp32", scaling)
               for backend, scaling in [("engine", "none"), ("engine", "dynamic"), ("torchdiffeq", "none"),
                                        ("torchode", "none")]
               if not get_backend(backend).missing_dependency()]
    for n_params in (2, 20):
        times = measure_times(configs, n_params, args.steps, "rk4", args.repeats)
        for backend, precision, scaling in configs:
            row = measure_ops(backend, n_params, 20, "rk4", precision, scaling)
            row.update(times[(backend, precision, scaling)])
            rows.append(row)
            print(f"{backend:12s} {scaling:8s} {precision:5s} params={n_params:2d}  solver ops/step fwd "
                  f"{row['solver_ops_per_step_fwd']:6.1f} bwd {row['solver_ops_per_step_bwd']:6.1f}   solver µs/step "
                  f"fwd {row['solver_us_per_step_fwd']:7.1f} bwd {row['solver_us_per_step_bwd']:7.1f}   (all µs/step "
                  f"fwd {row['us_per_step_fwd']:7.1f} bwd {row['us_per_step_bwd']:7.1f})", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"torch": torch.__version__, "threads": 1, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
