"""Task `stl10`: the parabolic neural-ODE CNN on STL-10 (seed slide "STL-10: MP Matches FP32 Accuracy, Faster").

Three ODE blocks (4 classical-RK4 steps each on [0, 1], weights piecewise constant over 4 intervals) in a
small CNN, trained with SGD (lr 0.05, momentum 0.9, weight decay 1e-4, batch 16, cosine to 1e-4,
parameters clamped to ±1) on the 5000 training images minus a seeded, class-balanced validation split used
for model selection; `test_acc` is measured once, at the end, on the official 8000-image test split with
the model that did best on validation. (The reference scripts reported their selection split as "test".)

The ODE blocks run through the cell's backend and precision; the layers between them run under
torch.autocast in the cell's 16-bit dtype (fp32 otherwise) for every backend, so backends differ only in how
the ODE blocks are solved and differentiated. Evaluation runs the engine at full precision on the cell's
tableau, so accuracies compare training precisions, not inference precisions.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from suite.data.augment import augment, resize
from suite.data.stl10 import identify_stl10, load_stl10, split_validation
from suite.measure import synchronize
from suite.models.parabolic_cnn import ParabolicCNN
from suite.rules import Rule
from suite.tasks._base import TASKS, AbstractTask, CellContext, TaskParams
from suite.tasks._training import SCALE, CurveSpec, TrainingLoop, evaluation_solver

SPLIT_NOTE = ("test_acc: the official test split, evaluated once at the end with the model that did best on a "
              "validation split carved from train; the reference scripts reported their selection split as test")


class STL10Params(TaskParams):
    data_source: Literal["auto", "real", "proxy"] = "auto"
    data_path: str | None = Field(None, description="the stl10_binary folder (else the CTBENCH_STL10 variable)")
    channels: int = Field(128, ge=1, json_schema_extra=SCALE, description="C: widths C, 2C, 4C")
    image_size: int = Field(128, ge=8, json_schema_extra=SCALE, description="training and evaluation resolution")
    epochs: int = Field(160, ge=1, json_schema_extra=SCALE)
    max_iterations: int | None = Field(None, ge=1, json_schema_extra=SCALE,
                                       description="stop after this many iterations (short profiles)")
    val_every: int | None = Field(None, ge=1, json_schema_extra=SCALE,
                                  description="iterations between validations (default: once per epoch)")
    eval_batch: int = Field(256, ge=1, json_schema_extra=SCALE)
    eval_limit: int | None = Field(None, ge=1, json_schema_extra=SCALE,
                                   description="evaluate on the first n validation/test images (short profiles)")
    batch: int = Field(16, ge=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    lr_min: float = Field(1e-4, ge=0)
    clamp: float = Field(1.0, gt=0)
    intervals: int = Field(4, ge=1)
    T: float = Field(1.0, gt=0)
    augmentation: bool = True


def _autocast(ctx: CellContext):
    """The layers between ODE blocks: autocast in the cell's 16-bit dtype, whatever the backend."""
    dtype = ctx.precision.autocast_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(ctx.device.type, dtype=dtype)


@TASKS.register_instance("stl10")
class STL10(AbstractTask):
    name = "stl10"
    Params = STL10Params
    metric_names: ClassVar[tuple[str, ...]] = (
        "test_acc", "val_acc", "train_loss", "fwd_s", "bwd_s", "iter_s", "input_s", "total_s", "peak_mem_gib",
        "saved_for_backward_mib", "iters_done", "epochs_done", "params_m", "skipped_steps",
    )
    curve = CurveSpec("val_acc", "higher", 0.005, what="top-1 accuracy on the validation split carved from train "
                      "(the selection split), fp32 engine; tolerance 0.5 points")
    summary = "parabolic neural-ODE CNN on STL-10 (offline proxy without the data): accuracy, memory, time"
    gate_rules: ClassVar[dict[str, Rule]] = {
        "test_acc": Rule("relative", "higher", 0.05, atol=0.02),
        "val_acc": Rule("relative", "higher", 0.05, atol=0.02),
        "train_loss": Rule("relative", "lower", 0.02, atol=1e-3),
    }

    def input_identity(self, params: STL10Params) -> dict[str, str]:
        return identify_stl10(params.data_source, params.data_path)

    def run(self, params: STL10Params, ctx: CellContext) -> dict[str, float]:
        device, master = ctx.device, ctx.precision.master
        data = load_stl10(params.data_source, params.data_path)
        ctx.extra.update({"dataset": data.name, "data_provenance": data.provenance, "split_note": SPLIT_NOTE})
        train_idx, val_idx = split_validation(data.train_y, params.val_fraction, seed=0)
        # The training images live on the device as uint8 (augmentation runs there); 5000 × 27 KB ≈ 138 MB.
        train_x = torch.from_numpy(np.ascontiguousarray(data.train_x[train_idx])).to(device)
        train_y = torch.from_numpy(data.train_y[train_idx]).to(device)
        ctx.check_deadline()
        torch.manual_seed(ctx.seed)
        model = ParabolicCNN(params.channels, intervals=params.intervals).to(device=device, dtype=master)
        params_m = sum(p.numel() for p in model.parameters()) / 1e6
        t_grid = torch.linspace(0.0, params.T, ctx.steps + 1, dtype=master, device=device)
        per_epoch = math.ceil(len(train_idx) / params.batch)
        iterations = params.epochs * per_epoch
        if params.max_iterations is not None:
            iterations = min(iterations, params.max_iterations)
        val_every = params.val_every or per_epoch
        optimizer = torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.momentum,
                                    weight_decay=params.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=iterations, eta_min=params.lr_min)
        gen = torch.Generator().manual_seed(ctx.seed)
        solver = ctx.solver

        def solve(block, y):
            return solver.final_state(block, y, t_grid).to(y.dtype if y.dtype == master else master)

        input_times: list[float] = []
        curve: list[tuple[float, float]] = []
        clock: dict[str, float] = {}  # the curve's time origin (moved back by the time before a checkpoint)
        shuffle = {"order": torch.randperm(len(train_idx), generator=gen)}

        def make_forward(it: int):
            if "started" not in clock:
                clock["started"] = time.perf_counter() - (curve[-1][0] if curve else 0.0)
            position = (it % per_epoch) * params.batch
            if it and position == 0:
                shuffle["order"] = torch.randperm(len(train_idx), generator=gen)
            batch = shuffle["order"][position: position + params.batch].to(device)
            synchronize(device)
            t0 = time.perf_counter()
            images = train_x.index_select(0, batch)
            x = (augment(images, params.image_size, gen, master) if params.augmentation
                 else resize(images, params.image_size, master))
            labels = train_y.index_select(0, batch)
            synchronize(device)
            input_times.append(time.perf_counter() - t0)

            def forward():
                with _autocast(ctx):
                    logits = model(x, solve)
                loss = F.cross_entropy(logits.float(), labels)
                curve.append((time.perf_counter() - clock["started"], float(loss.detach())))
                return loss
            return forward

        def after_step() -> None:
            schedule.step()
            with torch.no_grad():
                for p in model.parameters():
                    p.clamp_(-params.clamp, params.clamp)

        best = {"acc": -1.0, "state": None, "iteration": 0}

        def validate(iterations_done: int) -> float:
            acc = self._accuracy(params, ctx, model, data.train_x, data.train_y, val_idx)
            if acc > best["acc"]:
                best.update(acc=acc, state=copy.deepcopy(model.state_dict()), iteration=iterations_done)
            return acc

        state = {"model": model, "schedule": schedule, "data": gen, "shuffle": shuffle, "best": best,
                 "curve": curve, "input_times": input_times}
        training = TrainingLoop(ctx, optimizer, after_step=after_step, state=state, curve=self.curve,
                                evaluate=validate, eval_every=val_every, evaluate_at_start=False
                                ).run(iterations, make_forward)
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        test_idx = np.arange(len(data.test_y))
        test_acc = self._accuracy(params, ctx, model, data.test_x, data.test_y, test_idx)
        path = ctx.artifact_path("curve", ".npz")
        if path is not None:
            np.savez_compressed(path, wall_s=np.array([c[0] for c in curve]), loss=np.array([c[1] for c in curve]))
        ctx.extra["selected_iteration"] = best["iteration"]
        ctx.report_progress(1.0)
        return {
            "test_acc": test_acc, "val_acc": best["acc"], "train_loss": curve[-1][1] if curve else math.nan,
            "input_s": float(np.median(input_times)) if input_times else math.nan,
            "epochs_done": training["iters_done"] / per_epoch, "params_m": params_m, **training,
        }

    def _accuracy(self, params, ctx, model, images, labels, indices) -> float:
        """Top-1 accuracy in fp32 through the engine at full precision (comparable across cells)."""
        if params.eval_limit is not None:
            indices = indices[: params.eval_limit]
        fp32 = evaluation_solver(ctx)
        master = ctx.precision.master
        t_grid = torch.linspace(0.0, params.T, ctx.steps + 1, dtype=master, device=ctx.device)
        correct = 0
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for start in range(0, len(indices), params.eval_batch):
                ctx.check_deadline()
                chunk = indices[start: start + params.eval_batch]
                x = resize(torch.from_numpy(np.ascontiguousarray(images[chunk])).to(ctx.device), params.image_size,
                           master)
                logits = model(x, lambda block, y: fp32.final_state(block, y, t_grid))
                correct += int((logits.argmax(1).cpu() == torch.from_numpy(labels[chunk])).sum())
        model.train(was_training)
        return correct / max(len(indices), 1)
