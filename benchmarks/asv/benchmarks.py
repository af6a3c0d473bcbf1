"""asv benchmarks: engine and backends over commits (`nox -s asv`, see README "asv").

Trust first, on a shared machine:
- ratio tracks (`*.track_time_ratio`): two fwd+bwd times measured inside one benchmark call, interleaved over
  rounds, their median ratio (interleaved_ratio.py): engine ÷ torchdiffeq at each precision, and the engine's
  low precision ÷ its fp32 (tf32 on CUDA). Machine load hits both sides alike; lower is better;
- op counts (`SolverOverhead.track_ops_per_step_*`): the engine's own aten operations per step, forward and
  backward (benchmarks/solver_overhead.py): no clock at all;
- `AccuracySuite.track_*`: numbers of real ctbench cells (stiff-rk4 relative gradient errors, the GBM gradient
  bias of the engine's Euler-Maruyama estimator, a cnf-2d smoke NLL), deterministic; lower is better.
Noisy on a shared CPU (read them on a quiet machine only):
- `SolverSuite.time_*`: absolute fwd+bwd time of a small fixed neural ODE per backend × precision, with asv's
  statistics (several samples, two rounds in separate processes); `peakmem_*`: peak resident memory;
- on CUDA, `CudaMemorySuite.track_cuda_peak_mib`: the allocator peak (asv's peakmem measures host memory).

The device comes from CTBENCH_ASV_DEVICE (default cpu). asv.conf.json launches benchmarks from a fork server
(torch imported once, not once per benchmark); on a GPU run asv with `--launch-method spawn` (CUDA cannot fork).
An unsupported combination raises NotImplementedError in setup, which asv records as skipped.
"""

from __future__ import annotations

import functools
import os
import sys

import torch

sys.path[:0] = [os.path.dirname(__file__), os.path.dirname(os.path.dirname(__file__))]  # helpers beside us
from interleaved_ratio import interleaved_ratio  # noqa: E402

DEVICE = os.environ.get("CTBENCH_ASV_DEVICE", "cpu")
# One torch thread by default: a second thread shares its core with whatever else runs, and that hits the
# multi-threaded kernels (fp32 GEMMs) far harder than the single-threaded ones (CPU fp16), so the two sides of a
# ratio would not be loaded alike. CTBENCH_ASV_THREADS=N for a quiet machine.
torch.set_num_threads(int(os.environ.get("CTBENCH_ASV_THREADS", "1")))
BATCH, DIM, WIDTH, STEPS = 64, 16, 64, 20
HIGH = "fp32" if DEVICE == "cpu" else "tf32"  # what low precision is measured against (tf32: CUDA's fast fp32)
PRECISIONS = ["fp32", "bf16"] if DEVICE == "cpu" else ["fp32", "tf32", "bf16", "fp16"]
RATIO_ROUNDS, RATIO_NUMBER = 7, 2  # 7 interleaved rounds of 2 calls per side: ≈ 1–3 s per ratio on 2 CPU cores


class _Field(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(DIM, WIDTH), torch.nn.Tanh(), torch.nn.Linear(WIDTH, DIM))

    def forward(self, t, y):
        return self.net(y)


def _solver(backend: str, precision: str):
    from suite.backends import get_backend
    from suite.precision import get_precision

    chosen = get_backend(backend)
    reason = chosen.unsupported_reason(method="rk4", precision=precision, scaling="none", device=DEVICE)
    if DEVICE not in get_precision(precision).devices:
        reason = f"{precision} does not exist on {DEVICE}"
    if reason:
        raise NotImplementedError(reason)
    return chosen.solver("rk4", precision, "none")


@functools.cache
def _fwd_bwd(backend: str, precision: str):
    """One forward + backward of the fixed problem through a backend; returns the loss (finite or not).

    Built and warmed up once per process: asv reruns a benchmark's setup before every timed sample."""
    solver = _solver(backend, precision)
    torch.manual_seed(0)
    field = _Field().to(DEVICE)
    y0 = torch.randn(BATCH, DIM, device=DEVICE)
    t = torch.linspace(0.0, 1.0, STEPS + 1, device=DEVICE)

    def step():
        with solver.autocast(y0.device):
            final = solver.final_state(field, y0, t)
        loss = final.float().pow(2).mean()
        loss.backward()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return loss.detach()

    step()  # warm-up: lazy registrations, caches, the allocator
    return step


class SolverSuite:
    """Forward + backward of a 20-step classical-RK4 solve of a small MLP field: absolute, noisy when shared."""

    params = (["engine", "engine-autocast", "torchdiffeq", "torchdiffeq-adjoint"], ["fp32", "bf16"])
    param_names = ["backend", "precision"]
    timeout = 120
    # asv's statistics: one call per sample (asv reruns setup between the calls of a sample, so more would
    # only add setups), 7 to 20 samples within 8 s, in 2 rounds (separate processes, interleaved with the
    # other benchmarks and the other commit under --interleave-rounds)
    number = 1
    repeat = (7, 20, 8.0)
    rounds = 2
    warmup_time = 0.5

    def setup(self, backend, precision):
        self.step = _fwd_bwd(backend, precision)

    def time_forward_backward(self, backend, precision):
        self.step()

    def peakmem_forward_backward(self, backend, precision):
        self.step()


class EngineVsTorchdiffeq:
    """engine ÷ torchdiffeq, fwd+bwd time, measured in one call (interleaved rounds, median ratio)."""

    params = [PRECISIONS]
    param_names = ["precision"]
    rounds = 2
    timeout = 300

    def setup(self, precision):
        self.engine, self.torchdiffeq = _fwd_bwd("engine", precision), _fwd_bwd("torchdiffeq", precision)

    def track_time_ratio(self, precision):
        return interleaved_ratio(self.engine, self.torchdiffeq, rounds=RATIO_ROUNDS, number=RATIO_NUMBER).median

    track_time_ratio.unit = "engine ÷ torchdiffeq (time)"


class EngineLowPrecision:
    """The engine at a low precision ÷ the engine at fp32 (tf32 on CUDA), fwd+bwd time, in one call."""

    params = [["bf16", "fp16"]]
    param_names = ["precision"]
    rounds = 2
    timeout = 300

    def setup(self, precision):
        self.low, self.high = _fwd_bwd("engine", precision), _fwd_bwd("engine", HIGH)

    def track_time_ratio(self, precision):
        return interleaved_ratio(self.low, self.high, rounds=RATIO_ROUNDS, number=RATIO_NUMBER).median

    track_time_ratio.unit = f"low precision ÷ {HIGH} (time)"


class SolverOverhead:
    """The engine's own aten operations per RK4 step (beyond the field and its VJP): counted, not timed."""

    params = [["fp32/none", "fp16/dynamic"]]
    param_names = ["precision/scaling"]
    rounds = 1  # a count: the same in every process
    timeout = 120

    def setup(self, config):
        from solver_overhead import measure_ops

        precision, scaling = config.split("/")
        _solver("engine", precision)  # NotImplementedError (skipped) where the engine cannot run it here
        self.row = measure_ops("engine", 2, steps=6, precision=precision, scaling=scaling)

    def track_ops_per_step_fwd(self, config):
        return self.row["solver_ops_per_step_fwd"]

    def track_ops_per_step_bwd(self, config):
        return self.row["solver_ops_per_step_bwd"]

    track_ops_per_step_fwd.unit = "aten ops per step"
    track_ops_per_step_bwd.unit = "aten ops per step"


class CudaMemorySuite(SolverSuite):
    """On CUDA runs only: the allocator peak of the same forward + backward (asv's peakmem is host memory)."""

    def setup(self, backend, precision):
        if DEVICE != "cuda":
            raise NotImplementedError("the CUDA allocator peak is tracked on CUDA runs only")
        super().setup(backend, precision)

    def track_cuda_peak_mib(self, backend, precision):
        torch.cuda.reset_peak_memory_stats()
        self.step()
        return torch.cuda.max_memory_allocated() / 2**20

    track_cuda_peak_mib.unit = "MiB"
    time_forward_backward = None
    peakmem_forward_backward = None


def _run_cell(task: str, **selection):
    from suite.cell import run_cell
    from suite.spec import expand, load_spec, spec_files

    spec = load_spec(next(p for p in spec_files() if p.stem == task))
    cells = [c for c in expand(spec, "smoke") if all(getattr(c, k) == v for k, v in selection.items())]
    if len(cells) != 1:
        raise NotImplementedError(f"{task}: {len(cells)} smoke cells match {selection}")
    outcome = run_cell(cells[0])
    if outcome["status"] != "ok":
        raise RuntimeError(f"{cells[0].cell_id}: {outcome['status']}: {outcome['reason']}")
    return outcome["metrics"]


class AccuracySuite:
    """Accuracy numbers of real cells (errors and NLLs: lower is better, as asv assumes)."""

    timeout = 300
    rounds = 1  # deterministic cells: a second process would compute the same numbers

    def track_stiff_rel_err_grad_y0(self, precision, scaling):
        metrics = _run_cell("stiff-rk4", variant="published", backend="engine", precision=precision,
                            scaling=scaling)
        return metrics["rel_err_grad_y0"]

    track_stiff_rel_err_grad_y0.params = (["fp32", "bf16", "fp16"], ["none", "dynamic"])
    track_stiff_rel_err_grad_y0.param_names = ["precision", "scaling"]
    track_stiff_rel_err_grad_y0.unit = "relative error"

    def track_gbm_bias(self):
        metrics = _run_cell("sde-adjoint-bias", variant="gbm", backend="engine", method="euler-maruyama",
                            precision="fp64", steps=256)
        return abs(metrics["bias"])

    track_gbm_bias.unit = "|estimate - exact|"

    def track_cnf_smoke_nll(self):
        return _run_cell("cnf-2d", variant="checkerboard", backend="engine", precision="fp32", scaling="none")[
            "val_nll"]

    track_cnf_smoke_nll.unit = "nats"
