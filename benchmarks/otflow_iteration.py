"""One OT-Flow BSDS300-shaped training iteration per configuration: ms/iter and peak GiB.

Shape as FACTS.md's anchors: d = 63, m = 1024, nTh = 2, classical RK4 with 15 steps, batch 512, Adam;
median of 8 iterations after 3 warm-ups; peak = max_memory_allocated after a reset before each
iteration, minus what was already allocated then (model, Adam state, the batch; no resident data set).
`python benchmarks/otflow_iteration.py --device cuda --json out.json`. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import torch

from suite.backends import get_backend
from suite.measure import synchronize
from suite.models.otflow_potential import OTFlowPotential
from suite.precision import get_precision, tf32_mode
from suite.tasks._training import saved_for_backward_bytes
from suite.tasks.otflow import OTFlowField, OTFlowParams, _costs, _loss

CONFIGS = [("torchdiffeq", "tf32", "none"), ("engine", "tf32", "none"), ("torchdiffeq", "bf16", "none"),
           ("engine", "bf16", "none"), ("torchdiffeq", "fp16", "grad"), ("engine", "fp16", "dynamic")]


def one_config(backend, precision, scaling, device, width, batch, steps, warmup=3, repeats=8) -> dict:
    params = OTFlowParams(width=width, batch=batch)
    torch.manual_seed(0)
    potential = OTFlowPotential(63, width, 2, 10).to(device)
    field = OTFlowField(potential, params.alpha[0])
    solver = get_backend(backend).solver("rk4", precision, scaling)
    optimizer = torch.optim.Adam(potential.parameters(), lr=1e-3)
    scaler = solver.grad_scaler(device)
    t = torch.linspace(0, 1, steps + 1, device=device)
    x = torch.randn(batch, 63, device=device) * 0.09

    def iteration():
        with solver.autocast(device):
            loss = _loss(params, *_costs(solver, field, x, t, params.prior_var, torch.float32))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    times, peaks = [], []
    with tf32_mode(get_precision(precision).tf32):
        for k in range(warmup + repeats):
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
                resident = torch.cuda.memory_allocated()  # model, optimizer state, the batch
            synchronize(device)
            start = time.perf_counter()
            loss = iteration()
            synchronize(device)
            if k >= warmup:
                times.append(time.perf_counter() - start)
                if device.startswith("cuda"):
                    peaks.append((torch.cuda.max_memory_allocated() - resident) / 2**30)
        with solver.autocast(device):
            probe, saved = saved_for_backward_bytes(
                lambda: _loss(params, *_costs(solver, field, x, t, params.prior_var, torch.float32)))
        probe.backward()  # free the probe's graph now, not whenever the garbage collector finds it
    stats = solver.last_stats
    return {"backend": backend, "precision": precision, "scaling": scaling,
            "ms_per_iter": 1e3 * statistics.median(times),
            "peak_gib": max(peaks) if peaks else None, "saved_for_backward_gib": saved / 2**30,
            "loss": float(loss.detach()), "retries_last_solve": stats.n_retries if stats else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for config in CONFIGS:
        gc.collect()  # nothing of the previous configuration may count towards this one's peak
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        try:
            rows.append(one_config(*config, args.device, args.width, args.batch, args.steps))
        except Exception as exc:  # noqa: BLE001 — report the failing configuration and go on
            rows.append({"backend": config[0], "precision": config[1], "scaling": config[2],
                         "error": f"{type(exc).__name__}: {exc}"})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        with open(args.json, "w") as fh:
            json.dump({"device": name, "torch": torch.__version__, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
