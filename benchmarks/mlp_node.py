"""Engine vs torchdiffeq on an MLP neural ODE: time, peak memory, bytes kept for backward, host syncs.

Problem (from the foundation issue): batch 512, state dim 64, MLP width 256 (two hidden layers, tanh, time
as an input), 100 classical-RK4 steps on [0, 1], loss = mean(y(1)²), one forward + backward.

Run `python benchmarks/mlp_node.py [--device cuda] [--repeats 10]` for a table, or `nox -s perf` for the
pytest-benchmark version. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

from suite.backends import get_backend
from suite.measure import synchronize

BATCH, DIM, WIDTH, STEPS = 512, 64, 256, 100


class MLPField(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(DIM + 1, WIDTH), torch.nn.Tanh(),
            torch.nn.Linear(WIDTH, WIDTH), torch.nn.Tanh(),
            torch.nn.Linear(WIDTH, DIM),
        )

    def forward(self, t, y):
        return self.net(torch.cat([y, t.to(y.dtype).expand(y.shape[0], 1)], dim=1))


def setup(device: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    field = MLPField().to(device)
    y0 = (torch.randn(BATCH, DIM, generator=gen) * 0.5).to(device)
    t = torch.linspace(0.0, 1.0, STEPS + 1, device=device)
    return field, y0, t


def step(solver, field, y0, t, device):
    """One forward + backward; returns (fwd seconds, bwd seconds)."""
    field.zero_grad(set_to_none=True)
    synchronize(device)
    t0 = time.perf_counter()
    with solver.autocast(device):
        loss = solver.final_state(field, y0, t).float().pow(2).mean()
    synchronize(device)
    t1 = time.perf_counter()
    loss.backward()
    synchronize(device)
    return t1 - t0, time.perf_counter() - t1


def saved_bytes(solver, field, y0, t, device) -> int:
    """Bytes autograd keeps for backward (saved-tensor hooks): exact and device independent."""
    total = 0
    seen: set[int] = set()

    def pack(x):
        nonlocal total
        key = x.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += x.untyped_storage().nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        with solver.autocast(device):
            loss = solver.final_state(field, y0, t).float().pow(2).mean()
    loss.backward()
    return total


def count_syncs(solver, field, y0, t, device) -> int | None:
    """CUDA only: synchronizing calls seen by torch's sync debug mode during one forward + backward."""
    if torch.device(device).type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(solver, field, y0, t, "cpu")  # no explicit synchronize: count only what the solvers do
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def measure(backend: str, precision: str, device: str, repeats: int = 5, warmup: int = 2) -> dict:
    field, y0, t = setup(device)
    solver = get_backend(backend).solver("rk4", precision, "none")
    for _ in range(warmup):
        step(solver, field, y0, t, device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    fwd, bwd = [], []
    for _ in range(repeats):
        f, b = step(solver, field, y0, t, device)
        fwd.append(f)
        bwd.append(b)
    row = {
        "backend": backend, "precision": precision, "device": device,
        "fwd_ms": 1e3 * statistics.median(fwd), "bwd_ms": 1e3 * statistics.median(bwd),
        "total_ms": 1e3 * statistics.median([a + b for a, b in zip(fwd, bwd)]),
        "saved_for_backward_mib": saved_bytes(solver, field, y0, t, device) / 2**20,
    }
    if torch.device(device).type == "cuda":
        row["peak_alloc_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    row["host_syncs_per_solve"] = count_syncs(solver, field, y0, t, device)
    stats = solver.last_stats
    if stats is not None:
        row["engine_backward_syncs"] = stats.n_host_syncs_backward
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    for precision in args.precisions.split(","):
        for backend in ("torchdiffeq", "engine"):
            rows.append(measure(backend, precision, args.device, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": {"torch": torch.__version__, "device": args.device,
                               "name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"},
                       "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
