"""The memory/time frontier: bytes kept for backward against fwd+bwd wall time, per memory setting.

For three problems (the MLP neural ODE of benchmarks/mlp_node.py, the cnf-2d hypernetwork field at its 127
steps, a 2000-step solve of a small MLP), every engine memory setting (states, stages, checkpoint every ⌈√n⌉
and every K steps) at fp32, bf16 and fp16 with dynamic scaling, with torchdiffeq's `odeint` and
`odeint_adjoint` on the same axes. Saved bytes are counted with saved-tensor hooks (exact, device
independent; what the graph holds, not the allocator's peak). Times are medians over interleaved repeats:
every row once per round, so a machine's drift lands on all rows alike.

    python benchmarks/memory_frontier.py [--device cuda] [--repeats 9] [--problems mlp,cnf,long]
        [--json out.json] [--figure out.png]

Numbers are printed, never asserted. `--tiny` shrinks every problem to a smoke check (what the test suite
runs).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from suite.backends import get_backend
from suite.measure import synchronize
from suite.models.cnf_hypernet import HyperNetField
from suite.tasks._training import saved_for_backward_bytes

PRECISIONS = (("fp32", "none"), ("bf16", "none"), ("fp16", "dynamic"))


@dataclass
class Problem:
    name: str
    field: torch.nn.Module
    y0: torch.Tensor | tuple[torch.Tensor, ...]
    t: torch.Tensor

    def loss(self, final) -> torch.Tensor:
        parts = final if isinstance(final, tuple) else (final,)
        return sum(p.float().pow(2).mean() for p in parts)


class _MLP(torch.nn.Module):
    def __init__(self, dim: int, width: int, layers: int) -> None:
        super().__init__()
        blocks: list[torch.nn.Module] = [torch.nn.Linear(dim + 1, width), torch.nn.Tanh()]
        for _ in range(layers - 1):
            blocks += [torch.nn.Linear(width, width), torch.nn.Tanh()]
        self.net = torch.nn.Sequential(*blocks, torch.nn.Linear(width, dim))

    def forward(self, t, y):
        return self.net(torch.cat([y, t.to(y.dtype).expand(y.shape[0], 1)], dim=1))


def make_problem(name: str, device: str, tiny: bool) -> Problem:
    torch.manual_seed(0)
    if name == "mlp":  # benchmarks/mlp_node.py: batch 512, dim 64, width 256, 100 RK4 steps
        batch, dim, width, steps = (16, 8, 16, 10) if tiny else (512, 64, 256, 100)
        field, y0 = _MLP(dim, width, 2), 0.5 * torch.randn(batch, dim)
    elif name == "cnf":  # cnf-2d's field at the paper's width, exact divergence, 127 steps
        batch, width, hidden, steps = (16, 8, 8, 6) if tiny else (1024, 128, 32, 127)
        field = HyperNetField(2, width, hidden)
        y0 = (torch.randn(batch, 2), torch.zeros(batch, 1))
    elif name == "long":  # a long solve: where checkpointing is the only setting that fits
        batch, dim, width, steps = (8, 4, 8, 40) if tiny else (256, 16, 64, 2000)
        field, y0 = _MLP(dim, width, 1), 0.5 * torch.randn(batch, dim)
    else:
        raise ValueError(f"unknown problem {name!r}; known: mlp, cnf, long")
    y0 = tuple(y.to(device) for y in y0) if isinstance(y0, tuple) else y0.to(device)
    return Problem(name, field.to(device), y0, torch.linspace(0.0, 1.0, steps + 1, device=device))


@dataclass
class Row:
    problem: str
    solver: str  # engine | torchdiffeq | torchdiffeq-adjoint
    memory: str
    precision: str
    scaling: str
    run: Callable[[], None]
    saved_mib: float = math.nan
    times_ms: list[float] | None = None

    def as_dict(self) -> dict:
        times = self.times_ms or []
        return {"problem": self.problem, "solver": self.solver, "memory": self.memory, "precision": self.precision,
                "scaling": self.scaling, "saved_for_backward_mib": self.saved_mib,
                "fwd_bwd_ms_median": statistics.median(times) if times else math.nan, "repeats": len(times)}


def make_rows(problem: Problem, device: str, checkpoint_every: list[int]) -> list[Row]:
    n = problem.t.shape[0] - 1
    settings = ["states", "stages", "checkpoint", *(f"checkpoint:{k}" for k in checkpoint_every if k < n)]
    rows = []

    def runner(backend: str, precision: str, scaling: str, memory: str | None):
        solver = get_backend(backend).solver("rk4", precision, scaling)
        if memory is not None:
            solver.memory = memory

        def forward() -> torch.Tensor:
            problem.field.zero_grad(set_to_none=True)
            with solver.autocast(device):
                return problem.loss(solver.final_state(problem.field, problem.y0, problem.t))
        return forward

    for precision, scaling in PRECISIONS:
        for memory in settings:
            rows.append(Row(problem.name, "engine", memory, precision, scaling,
                            runner("engine", precision, scaling, memory)))
    for backend in ("torchdiffeq", "torchdiffeq-adjoint"):
        for precision, scaling in (("fp32", "none"), ("bf16", "none")):
            rows.append(Row(problem.name, backend, "autograd" if backend == "torchdiffeq" else "adjoint",
                            precision, scaling, runner(backend, precision, scaling, None)))
    return rows


def measure(rows: list[Row], device: str, repeats: int, low_repeats: int | None = None, warmup: int = 1) -> None:
    """Saved bytes (one forward under saved-tensor hooks), then `repeats` interleaved rounds of fwd+bwd.

    `low_repeats`: rounds for the 16-bit rows (default `repeats`). On a CPU without 16-bit kernels those
    run about 20x slower than fp32 and their times say nothing about a GPU, while their saved bytes are
    exact: `--low-repeats 1` times them once, 0 not at all (their time is then NaN, and not plotted)."""
    def wanted(row: Row) -> int:
        return repeats if low_repeats is None or row.precision == "fp32" else low_repeats

    for row in rows:
        loss, nbytes = saved_for_backward_bytes(row.run)
        row.saved_mib = nbytes / 2**20
        row.times_ms = []
        if wanted(row) == 0:
            continue
        loss.backward()
        for _ in range(warmup if wanted(row) > 1 else 0):
            row.run().backward()
    for round_ in range(max(wanted(row) for row in rows)):  # interleaved: one of each row per round
        for row in rows:
            if round_ >= wanted(row):
                continue
            synchronize(device)
            start = time.perf_counter()
            row.run().backward()
            synchronize(device)
            row.times_ms.append(1e3 * (time.perf_counter() - start))


def table(results: list[dict]) -> str:
    lines = [f"{'problem':8} {'solver':20} {'memory':14} {'precision':10} {'saved MiB':>10} {'fwd+bwd ms':>11} "
             f"{'vs states':>9}"]
    states = {(r["problem"], r["precision"]): r["fwd_bwd_ms_median"] for r in results
              if r["solver"] == "engine" and r["memory"] == "states"}
    for r in results:
        base = states.get((r["problem"], r["precision"]))
        ms = r["fwd_bwd_ms_median"]
        timed = not math.isnan(ms)
        shown = f"{ms:.2f}" if timed else "not timed"
        ratio = f"{ms / base:.2f}x" if timed and base and not math.isnan(base) else ""
        precision = r["precision"] + ("+" + r["scaling"] if r["scaling"] != "none" else "")
        lines.append(f"{r['problem']:8} {r['solver']:20} {r['memory']:14} {precision:10} "
                     f"{r['saved_for_backward_mib']:10.3f} {shown:>11} {ratio:>9}")
    return "\n".join(lines)


def figure(results: list[dict], path: str) -> None:
    """One panel per problem: saved MiB (log) against fwd+bwd ms; colour = solver and memory setting,
    marker = precision (the same in every panel)."""
    from matplotlib.lines import Line2D

    from suite.report._plots import pyplot

    plt = pyplot()
    problems = list(dict.fromkeys(r["problem"] for r in results))
    settings = list(dict.fromkeys(_setting(r) for r in results))
    colours = {name: plt.get_cmap("tab10")(k % 10) for k, name in enumerate(settings)}
    markers = {"fp32": "o", "bf16": "s", "fp16": "^"}
    fig, axes = plt.subplots(1, len(problems), figsize=(5.5 * len(problems), 4.5), squeeze=False)
    for ax, name in zip(axes[0], problems):
        for r in (r for r in results if r["problem"] == name and not math.isnan(r["fwd_bwd_ms_median"])):
            ax.scatter(r["saved_for_backward_mib"], r["fwd_bwd_ms_median"], marker=markers[r["precision"]],
                       color=colours[_setting(r)], s=40, edgecolors="black", linewidths=0.4)
        ax.set_xscale("log")
        ax.set_yscale("log")  # 16-bit on a CPU without its kernels is ~20x fp32: both must stay readable
        ax.set_xlabel("saved for backward (MiB, log)")
        ax.set_ylabel("forward + backward (ms, median, log)")
        ax.set_title(name)
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[s], label=s) for s in settings]
    handles += [Line2D([], [], marker=m, linestyle="", color="grey", label=p) for p, m in markers.items()]
    fig.legend(handles=handles, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merged(paths: list[str]) -> list[dict]:
    """The rows of several runs' JSON files (say, one per problem), in order; a file that is missing or is
    not this script's output is named in the error."""
    rows = []
    for path in paths:
        try:
            with open(path) as fh:
                data = json.load(fh)
            rows.extend(data["rows"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"--merge: {path} is not a memory_frontier.py --json file ({exc})") from exc
    return rows


def _setting(row: dict) -> str:
    return f"engine {row['memory']}" if row["solver"] == "engine" else row["solver"]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--problems", default="mlp,cnf,long")
    parser.add_argument("--checkpoint-every", default="4,32", help="K values besides ⌈√n⌉ (comma-separated)")
    parser.add_argument("--low-repeats", type=int, help="rounds for the bf16/fp16 rows (default: --repeats; 0: "
                        "saved bytes only)")
    parser.add_argument("--merge", help="comma-separated JSON files of earlier runs: print their table and draw "
                        "their figure together, measuring nothing")
    parser.add_argument("--tiny", action="store_true", help="smoke-check sizes (the test suite runs this)")
    parser.add_argument("--json", help="write the rows and the environment to this file")
    parser.add_argument("--figure", help="write the frontier figure (PNG) to this file")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.checkpoint_every.split(",") if k]
    if args.merge:
        results = merged(args.merge.split(","))
        print(table(results))
        if args.figure:
            figure(results, args.figure)
        return results
    results = []
    for name in args.problems.split(","):
        problem = make_problem(name, args.device, args.tiny)
        rows = make_rows(problem, args.device, ks)
        measure(rows, args.device, args.repeats, args.low_repeats)
        results.extend(r.as_dict() for r in rows)
        print(table([r.as_dict() for r in rows]), flush=True)
    if args.json:
        env = {"torch": torch.__version__, "device": args.device, "threads": torch.get_num_threads(),
               "name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "tiny": args.tiny}
        with open(args.json, "w") as fh:
            json.dump({"env": env, "rows": results}, fh, indent=2)
    if args.figure:
        figure(results, args.figure)
    return results


if __name__ == "__main__":
    main()
