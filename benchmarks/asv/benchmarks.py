"""asv benchmarks: engine and backends over commits (`asv continuous main HEAD`, see README).

- `time_*`: forward + backward of a small fixed neural ODE, per backend × precision (asv times it);
- `peakmem_*`: the same, peak resident memory of the benchmark process (CPU);
- `track_*`: numbers from real ctbench cells, all lower-is-better as asv assumes: stiff-rk4 relative
  gradient errors, the GBM gradient bias of the engine's Euler-Maruyama estimator, a cnf-2d smoke NLL, and on
  CUDA the allocator peak (asv's peakmem measures host memory only).

The device comes from CTBENCH_ASV_DEVICE (default cpu); on a GPU run asv with `--launch-method spawn`.
An unsupported combination raises NotImplementedError in setup, which asv records as skipped.
"""

from __future__ import annotations

import os

import torch

DEVICE = os.environ.get("CTBENCH_ASV_DEVICE", "cpu")
BATCH, DIM, WIDTH, STEPS = 64, 16, 64, 20


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


class SolverSuite:
    """Forward + backward of a 20-step classical-RK4 solve of a small MLP field."""

    params = (["engine", "engine-autocast", "torchdiffeq", "torchdiffeq-adjoint"], ["fp32", "bf16"])
    param_names = ["backend", "precision"]
    timeout = 120

    def setup(self, backend, precision):
        torch.manual_seed(0)
        self.solver = _solver(backend, precision)
        self.field = _Field().to(DEVICE)
        self.y0 = torch.randn(BATCH, DIM, device=DEVICE)
        self.t = torch.linspace(0.0, 1.0, STEPS + 1, device=DEVICE)
        self.step()  # warm-up

    def step(self):
        with self.solver.autocast(self.y0.device):
            final = self.solver.final_state(self.field, self.y0, self.t)
        final.float().pow(2).mean().backward()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    def time_forward_backward(self, backend, precision):
        self.step()

    def peakmem_forward_backward(self, backend, precision):
        self.step()



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
