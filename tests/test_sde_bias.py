"""sde-adjoint-bias: every estimator converges to what theory says, on shared paths."""

from __future__ import annotations

import math

import pytest
import torch

from suite.backends import get_backend
from suite.cell import run_cell
from suite.references.gbm import GBM
from suite.spec import Cell
from suite.tasks.sde_bias import SDEBiasParams, increments, pathwise_gradients, sde_problem

GBM_PARAMS = SDEBiasParams(problem="gbm", paths=50_000)
ESTIMATORS = [
    ("engine", "euler-maruyama", GBM().gradient()),     # DTO on the Itô form
    ("engine", "heun", GBM().gradient()),               # DTO on the Stratonovich form
    ("otd-corrected", "euler-maruyama", GBM().gradient()),
    ("otd-naive", "euler-maruyama", GBM().naive_adjoint_limit()),  # biased: converges to 1.365
]


@pytest.mark.parametrize(("backend", "method", "expected"), ESTIMATORS)
def test_each_estimator_on_gbm_is_within_4_standard_errors_of_its_expected_value(backend, method, expected):
    dw = increments(256, GBM_PARAMS.paths, GBM_PARAMS.T, seed=0)
    solver = get_backend(backend).solver(method, "fp64", "none")
    grads, _ = pathwise_gradients(solver, sde_problem(GBM_PARAMS), GBM_PARAMS, dw, "cpu", torch.float64)
    se = float(grads.std()) / math.sqrt(grads.numel())
    assert abs(float(grads.mean()) - expected) < 4 * se, (float(grads.mean()), se, expected)


def test_naive_and_corrected_adjoints_differ_by_the_ito_correction():
    """Pathwise, the naive adjoint is the corrected one times exp(σ²T/2) on GBM (up to the discretisation)."""
    params = SDEBiasParams(problem="gbm", paths=1000)
    dw = increments(512, params.paths, params.T, seed=1)
    naive, _ = pathwise_gradients(get_backend("otd-naive").solver("euler-maruyama", "fp64", "none"),
                                  sde_problem(params), params, dw, "cpu", torch.float64)
    fixed, _ = pathwise_gradients(get_backend("otd-corrected").solver("euler-maruyama", "fp64", "none"),
                                  sde_problem(params), params, dw, "cpu", torch.float64)
    ratio = (naive / fixed).mean().item()
    assert abs(ratio - math.exp(params.sigma**2 * params.T / 2)) < 0.02


def test_increments_are_shared_by_seed_and_step_count():
    assert torch.equal(increments(16, 10, 1.0, 3), increments(16, 10, 1.0, 3))
    assert not torch.equal(increments(16, 10, 1.0, 3), increments(16, 10, 1.0, 4))


def _cell(variant, backend, method, precision="fp64"):
    params = SDEBiasParams(problem=variant, paths=2000, reference_paths=4000, reference_steps=512)
    return Cell(task="sde-adjoint-bias", variant=variant, backend=backend, method=method, steps=16,
                precision=precision, scaling="none", seed=0, profile="smoke", device="cpu", params=params,
                spec_hash="t")


@pytest.mark.parametrize("variant", ["gbm", "cev"])
def test_smoke_cells_record_estimate_reference_and_bias(variant):
    out = run_cell(_cell(variant, "engine", "euler-maruyama", "fp32"))
    assert out["status"] == "ok", out["reason"]
    m = out["metrics"]
    assert {"grad_estimate", "grad_stderr", "grad_reference", "bias", "rel_err_grad", "fwd_s", "bwd_s"} <= set(m)
    assert math.isclose(m["bias"], m["grad_estimate"] - m["grad_reference"])
    assert out["extra"]["reference"].startswith("closed form")
    assert ("mc_reference" in m) == (variant == "cev")  # the Monte Carlo is a check beside the closed form


def test_sde_backends_refuse_ode_tasks_and_vice_versa():
    reason = get_backend("otd-naive").unsupported_reason(method="rk4", precision="fp64", scaling="none",
                                                          device="cpu", kind="ode")
    assert reason == "otd-naive does not integrate ODEs"
    reason = get_backend("torchdiffeq").unsupported_reason(method="euler-maruyama", precision="fp64",
                                                            scaling="none", device="cpu", kind="sde")
    assert reason == "torchdiffeq does not integrate SDEs"


TORCHSDE = [("torchsde", "euler"), ("torchsde", "midpoint"), ("torchsde-adjoint", "euler"),
            ("torchsde-adjoint", "reversible_heun")]


@pytest.mark.parametrize(("backend", "method"), TORCHSDE)
def test_torchsde_estimators_on_gbm_converge_to_the_truth(backend, method):
    pytest.importorskip("torchsde")
    params = SDEBiasParams(problem="gbm", paths=30_000)
    dw = increments(64, params.paths, params.T, seed=2)
    solver = get_backend(backend).solver(method, "fp64", "none")
    grads, _ = pathwise_gradients(solver, sde_problem(params), params, dw, "cpu", torch.float64)
    se = float(grads.std()) / math.sqrt(grads.numel())
    assert abs(float(grads.mean()) - GBM().gradient()) < 4 * se


def test_torchsde_sees_exactly_the_same_paths_as_the_engine():
    pytest.importorskip("torchsde")
    params = SDEBiasParams(problem="gbm", paths=500)
    dw = increments(32, params.paths, params.T, seed=3)
    ours, _ = pathwise_gradients(get_backend("engine").solver("euler-maruyama", "fp64", "none"),
                                 sde_problem(params), params, dw, "cpu", torch.float64)
    theirs, _ = pathwise_gradients(get_backend("torchsde").solver("euler", "fp64", "none"),
                                   sde_problem(params), params, dw, "cpu", torch.float64)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
