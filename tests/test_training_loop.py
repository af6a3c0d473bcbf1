"""TrainingLoop: the GradScaler-like policy for non-finite gradients (skip the step, count it) beside ending
the cell, and the engine's scaler handing back NaN gradients instead of raising when asked to."""

from __future__ import annotations

import pytest
import torch

from suite.backends import get_backend
from suite.precision import get_precision
from suite.tasks import CellContext, NonFiniteResult
from suite.tasks._training import TrainingLoop


def _ctx(on_overflow: str, backend: str = "engine", precision: str = "fp32", scaling: str = "none") -> CellContext:
    solver = get_backend(backend).solver("rk4", precision, scaling)
    if on_overflow == "skip":
        solver.on_failure = "nonfinite"
    return CellContext(solver=solver, precision=get_precision(precision), scaling=scaling, method="rk4", steps=4,
                       seed=0, device=torch.device("cpu"), on_overflow=on_overflow)


def _sqrt_at_zero_loop(ctx, bad_iterations):
    """loss = sqrt(|w - 1|) + w²: finite, but its gradient is infinite while w == 1 exactly."""
    w = torch.nn.Parameter(torch.ones(()))
    optimizer = torch.optim.SGD([w], lr=0.1)

    def make_forward(it):
        def forward():
            kink = torch.sqrt((w - 1).abs()) if it in bad_iterations else 0 * w
            return kink + w**2
        return forward

    metrics = TrainingLoop(ctx, optimizer).run(6, make_forward)
    return w, metrics


def test_skip_policy_skips_and_counts_a_non_finite_step():
    w, metrics = _sqrt_at_zero_loop(_ctx("skip"), bad_iterations={0})
    assert metrics["skipped_steps"] == 1.0
    assert float(w.detach()) < 1.0  # the later steps trained


def test_skip_policy_ends_the_cell_after_too_many_consecutive_skips():
    ctx = _ctx("skip")
    with pytest.raises(NonFiniteResult, match="consecutive optimizer steps skipped"):
        w = torch.nn.Parameter(torch.ones(()))
        loop = TrainingLoop(ctx, torch.optim.SGD([w], lr=0.1))
        loop.run(TrainingLoop.MAX_CONSECUTIVE_SKIPS + 1, lambda it: (lambda: torch.sqrt((w - 1).abs()) + w**2))


def test_fail_policy_lets_the_step_go_through():
    """'fail' (the default) changes nothing: a NaN gradient is applied and the next loss ends the cell."""
    w, metrics = _sqrt_at_zero_loop(_ctx("fail"), bad_iterations=set())
    assert metrics["skipped_steps"] == 0.0


def test_the_engine_scaler_gives_nan_gradients_the_loop_skips():
    """An engine cell with dynamic scaling and the skip policy: an unfixable backward is one skipped step."""
    ctx = _ctx("skip", precision="fp16", scaling="dynamic")
    theta = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([theta], lr=0.01)
    t = torch.linspace(0, 1, 5)

    def make_forward(it):
        y0 = torch.zeros(3) if it == 0 else torch.ones(3)  # sqrt at 0: no scale can make its VJP finite

        def forward():
            return ctx.solver.final_state(lambda s, y: theta.to(y.dtype) * torch.sqrt(y), y0, t,
                                          params=[theta]).sum()
        return forward

    metrics = TrainingLoop(ctx, optimizer).run(3, make_forward)
    assert metrics["skipped_steps"] == 1.0
    assert torch.isfinite(theta).all() and float(theta.detach()) != 1.0


def test_learning_curve_points_exclude_evaluation_time_and_are_kept_when_the_cell_fails():
    import time

    from suite.tasks._training import CurveSpec

    ctx = _ctx("fail")
    w = torch.nn.Parameter(torch.full((), 3.0))
    spec = CurveSpec("loss", "lower", 0.1)

    def evaluate(done: int) -> float:
        time.sleep(0.05)  # an evaluation that costs time: it must not count as training time
        return float(w.detach() ** 2)

    loop = TrainingLoop(ctx, torch.optim.SGD([w], lr=0.1), curve=spec, evaluate=evaluate, eval_every=2)
    metrics = loop.run(5, lambda it: (lambda: w**2))
    curve = ctx.extra["curve"]
    assert curve["iteration"] == [0, 2, 4, 5]  # at the start, every 2, and after the last iteration
    assert curve["metric"] == "loss" and curve["direction"] == "lower"
    assert curve["value"][0] == 9.0 and curve["value"] == sorted(curve["value"], reverse=True)
    assert curve["train_s"][0] == 0.0 and curve["train_s"][-1] == pytest.approx(metrics["total_s"])
    assert ctx.timing["eval_s"] >= 4 * 0.05 > 0
    assert metrics["total_s"] < ctx.timing["eval_s"] + metrics["total_s"]  # evaluation kept apart

    failing = _ctx("fail")
    v = torch.nn.Parameter(torch.ones(()))
    loop = TrainingLoop(failing, torch.optim.SGD([v], lr=0.1), curve=spec, evaluate=lambda done: 1.0, eval_every=1)
    with pytest.raises(NonFiniteResult):
        loop.run(4, lambda it: (lambda: v * (float("nan") if it == 2 else 1.0)))
    assert failing.extra["curve"]["iteration"] == [0, 1, 2]  # the points before the failure survive


def test_a_curve_needs_its_spec_evaluator_and_period_together():
    from suite.tasks._training import CurveSpec

    w = torch.nn.Parameter(torch.ones(()))
    with pytest.raises(ValueError, match="learning curve needs"):
        TrainingLoop(_ctx("fail"), torch.optim.SGD([w], lr=0.1), curve=CurveSpec("x", "lower", 0.1))
    with pytest.raises(ValueError, match="learning curve needs"):
        TrainingLoop(_ctx("fail"), torch.optim.SGD([w], lr=0.1), curve=CurveSpec("x", "lower", 0.1),
                     evaluate=lambda d: 0.0, eval_every=0)
