"""Task `cnf-2d`: a continuous normalizing flow on 2-D toy data (seed slide "CNF in 2D: Same Quality at fp16").

Data at t=1 is integrated to t=0 through the hypernetwork field with exact divergence; the loss is the
NLL under N(0, I). Training runs in the cell's precision and backend; validation NLL is reported twice:
`val_nll` evaluated in fp32 (whatever the training precision; the comparable number) and
`val_nll_train_precision` evaluated in the training precision and backend.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field, field_validator

from suite.data.toy2d import TOY2D, sample_toy2d
from suite.models.cnf_hypernet import HyperNetField
from suite.references.toy2d_entropy import entropy
from suite.rules import Rule
from suite.tasks._base import TASKS, AbstractTask, CellContext, TaskParams
from suite.tasks._training import SCALE, CurveSpec, TrainingLoop, evaluation_solver, mmd

# The learning curve's fixed validation set comes from its own stream, so it never shifts the training data.
CURVE_SEED_OFFSET = 1_000_003


class CNF2DParams(TaskParams):
    dataset: str = "checkerboard"
    width: int = Field(128, ge=1, json_schema_extra=SCALE)
    hidden: int = Field(32, ge=1, json_schema_extra=SCALE)
    iterations: int = Field(2000, ge=1, json_schema_extra=SCALE)
    batch: int = Field(1024, ge=1, json_schema_extra=SCALE)
    val_batch: int = Field(1024, ge=1, json_schema_extra=SCALE)
    mmd_samples: int = Field(1024, ge=2, json_schema_extra=SCALE)
    density_grid: int = Field(100, ge=2, json_schema_extra=SCALE, description="points per axis of the saved density")
    val_every: int = Field(100, ge=1, json_schema_extra=SCALE, description="iterations between learning-curve points")
    curve_batch: int = Field(2048, ge=1, json_schema_extra=SCALE,
                             description="fixed validation points of the learning curve")
    lr: float = Field(1e-2, gt=0)
    lr_step: int = Field(1000, ge=1, json_schema_extra=SCALE,
                         description="StepLR period: a scale knob, since the schedule follows the iteration budget")
    lr_gamma: float = Field(0.1, gt=0)
    t0: float = 0.0
    t1: float = 1.0

    @field_validator("dataset")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in TOY2D:
            raise ValueError(f"unknown dataset {v!r}; allowed: {', '.join(sorted(TOY2D.names()))}")
        return v


def _log_normal(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z * z).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def log_density(solver, field, x, t_data_to_latent, dtype) -> torch.Tensor:
    """log p(x) per point: integrate (x, 0) from data time to latent time, then N(0, I) minus Δlogp."""
    logp0 = torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)
    z, dlogp = solver.final_state(field, (x, logp0), t_data_to_latent)
    return _log_normal(z.to(dtype)) - dlogp.to(dtype).squeeze(1)


@TASKS.register_instance("cnf-2d")
class CNF2D(AbstractTask):
    name = "cnf-2d"
    Params = CNF2DParams
    tuple_state = True
    metric_names: ClassVar[tuple[str, ...]] = (
        "val_nll", "val_nll_stderr", "entropy", "entropy_error", "kl", "val_nll_train_precision", "mmd", "fwd_s",
        "bwd_s", "iter_s", "total_s", "peak_mem_gib", "saved_for_backward_mib", "iters_done",
    )
    curve = CurveSpec("val_nll", "lower", 0.02, what="NLL (nats) of a fixed validation set, fp32 engine")
    summary = "2-D CNF (FFJORD toy data), hypernetwork field, exact divergence, NLL / MMD / time / memory"
    gate_rules: ClassVar[dict[str, Rule]] = {
        "val_nll": Rule("relative", "lower", 0.02, atol=1e-3),
        "val_nll_train_precision": Rule("relative", "lower", 0.02, atol=1e-3),
        "mmd": Rule("relative", "lower", 0.10, atol=1e-4),
    }

    def reference(self, params: CNF2DParams) -> dict[str, float]:
        """H(p) of the training distribution: the floor of every model's expected NLL."""
        estimate = entropy(params.dataset)
        return {"entropy": estimate.value, "entropy_error": estimate.error}

    def run(self, params: CNF2DParams, ctx: CellContext) -> dict[str, float]:
        device, master = ctx.device, ctx.precision.master
        gen = torch.Generator().manual_seed(ctx.seed)  # data: a CPU generator, moved per batch
        torch.manual_seed(ctx.seed)
        field = HyperNetField(2, params.width, params.hidden).to(device=device, dtype=master)
        t_train = torch.linspace(params.t1, params.t0, ctx.steps + 1, dtype=master, device=device)
        solver = ctx.solver
        optimizer = torch.optim.Adam(field.parameters(), lr=params.lr)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, params.lr_step, params.lr_gamma)

        def make_forward(it: int):
            x = sample_toy2d(params.dataset, params.batch, gen, dtype=master, device=device)
            return lambda: -log_density(solver, field, x, t_train, master).mean()

        curve_gen = torch.Generator().manual_seed(ctx.seed + CURVE_SEED_OFFSET)
        x_curve = sample_toy2d(params.dataset, params.curve_batch, curve_gen, dtype=master, device=device)
        fp32 = evaluation_solver(ctx)

        def curve_nll(_: int) -> float:
            with torch.no_grad():
                return float(-log_density(fp32, field, x_curve, t_train, master).mean())

        training = TrainingLoop(ctx, optimizer, after_step=schedule.step,
                                state={"field": field, "schedule": schedule, "data": gen},
                                curve=self.curve, evaluate=curve_nll, eval_every=params.val_every).run(
            params.iterations, make_forward)
        metrics = {**self._evaluate(params, ctx, field, gen), **training}
        ctx.report_progress(1.0)
        return metrics

    def _evaluate(self, params: CNF2DParams, ctx: CellContext, field, gen) -> dict[str, float]:
        device, master = ctx.device, ctx.precision.master
        fp32 = evaluation_solver(ctx)
        t_fwd = torch.linspace(params.t1, params.t0, ctx.steps + 1, dtype=master, device=device)
        t_rev = t_fwd.flip(0)
        x_val = sample_toy2d(params.dataset, params.val_batch, gen, dtype=master, device=device)
        with torch.no_grad():
            per_point = -log_density(fp32, field, x_val, t_fwd, master).double()
            val_nll = per_point.mean()
            val_se = per_point.std() / math.sqrt(per_point.numel()) if per_point.numel() > 1 else math.nan
            with ctx.solver.autocast(device):
                val_low = -log_density(ctx.solver, field, x_val, t_fwd, master).mean()
            z = torch.randn(params.mmd_samples, 2, generator=gen, dtype=torch.float64).to(device, master)
            zeros = torch.zeros(z.shape[0], 1, dtype=master, device=device)
            samples = fp32.final_state(field, (z, zeros), t_rev)[0].to(master)
            data = sample_toy2d(params.dataset, params.mmd_samples, gen, dtype=master, device=device)
            lim = 4.0
            axis = torch.linspace(-lim, lim, params.density_grid, dtype=master, device=device)
            grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
            logp_grid = log_density(fp32, field, grid, t_fwd, master)
        path = ctx.artifact_path("density", ".npz")
        if path is not None:
            np.savez_compressed(
                path, samples=samples.double().cpu().numpy(), data=data.double().cpu().numpy(),
                log_density=logp_grid.double().reshape(params.density_grid, -1).cpu().numpy(),
                extent=np.array([-lim, lim, -lim, lim]),
            )
        ctx.extra["val_nll_note"] = "val_nll: fp32 engine evaluation; val_nll_train_precision: the cell's backend"
        floor = self.reference(params)
        ctx.extra["entropy_method"] = entropy(params.dataset).method
        return {"val_nll": float(val_nll), "val_nll_stderr": float(val_se), **floor,
                "kl": float(val_nll) - floor["entropy"], "val_nll_train_precision": float(val_low),
                "mmd": mmd(samples, data)}
