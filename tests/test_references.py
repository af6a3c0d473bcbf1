"""Closed-form references against Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest

from suite.references.gbm import GBM


def test_gbm_closed_forms_reproduce_the_slide():
    gbm = GBM()
    assert round(gbm.gradient(), 3) == 0.640
    assert round(gbm.naive_adjoint_limit(), 3) == 1.365


def test_gbm_closed_forms_against_monte_carlo():
    gbm = GBM()
    rng = np.random.default_rng(0)
    w_T = rng.standard_normal(400_000) * math.sqrt(gbm.T)
    pathwise = gbm.pathwise_derivative(w_T)
    se = pathwise.std() / math.sqrt(pathwise.size)
    assert abs(pathwise.mean() - gbm.gradient()) < 4 * se
    naive = np.exp(gbm.mu * gbm.T + gbm.sigma * w_T)  # the Stratonovich-style adjoint's pathwise value
    se_naive = naive.std() / math.sqrt(naive.size)
    assert abs(naive.mean() - gbm.naive_adjoint_limit()) < 4 * se_naive
    x_T = gbm.x0 * pathwise
    assert abs(x_T.mean() - gbm.expectation()) < 4 * x_T.std() / math.sqrt(x_T.size)


def test_cole_hopf_reproduces_the_published_han_jentzen_e_value():
    from suite.references.cole_hopf import SOC_VARIANTS, value_cole_hopf

    assert round(value_cole_hopf(SOC_VARIANTS["hje-2018"]), 4) == 4.5902  # published ≈ 4.5901 (4.590162 here)


def test_cole_hopf_is_converged_in_its_quadrature():
    from suite.references.cole_hopf import SOC_VARIANTS, value_cole_hopf

    for p in SOC_VARIANTS.values():
        coarse, fine = value_cole_hopf(p, points=1001), value_cole_hopf(p, points=3001)
        assert abs(coarse - fine) <= 1e-6 * max(1.0, abs(fine))


def test_cole_hopf_equals_a_direct_grid_in_two_dimensions():
    import dataclasses

    from scipy import special

    from suite.references.cole_hopf import SOC_VARIANTS, value_cole_hopf

    for name in ("slide", "hje-2018"):
        p = dataclasses.replace(SOC_VARIANTS[name], d=2)
        s = p.sigma * math.sqrt(p.T)
        x = np.linspace(-12, 12, 3001)
        xx, yy = np.meshgrid(x, x)
        log_f = (-0.5 * (xx**2 + yy**2) - math.log(2 * math.pi)
                 - p.terminal((p.z0 - p.x_ref + s * xx) ** 2 + (p.z0 - p.x_ref + s * yy) ** 2) / p.kappa)
        direct = -p.kappa * (special.logsumexp(log_f) + 2 * math.log(x[1] - x[0]))
        assert abs(value_cole_hopf(p) - direct) < 1e-6


@pytest.mark.parametrize(("name", "d"), [("slide", 10), ("hje-2018", 10), ("slide", 100), ("hje-2018", 100)])
def test_cole_hopf_against_brute_force_monte_carlo(name, d):
    import dataclasses

    from suite.references.cole_hopf import SOC_VARIANTS, value_cole_hopf, value_monte_carlo

    p = dataclasses.replace(SOC_VARIANTS[name], d=d)
    estimate, stderr = value_monte_carlo(p, 1_000_000, seed=7)
    assert abs(estimate - value_cole_hopf(p)) < 4 * stderr, (estimate, stderr, value_cole_hopf(p))


def test_cev_gradient_in_closed_form():
    from suite.references.cev import CEV

    cev = CEV(sigma=0.5, beta=1.5, x0=1.0, T=1.0)
    assert abs(cev.gradient() - (1 - 9 * math.exp(-8))) < 1e-15  # FACTS: 1 - 9e^-8 ≈ 0.996981
    for beta in (1.2, 1.5, 2.0, 3.0):  # the derivative of the closed-form expectation, by central differences
        eps = 1e-5
        fd = (CEV(0.7, beta, 1.3 + eps, 0.8).expectation() - CEV(0.7, beta, 1.3 - eps, 0.8).expectation()) / (2 * eps)
        assert abs(CEV(0.7, beta, 1.3, 0.8).gradient() - fd) < 1e-8
    assert CEV(beta=1.0).gradient() == 1.0
    with pytest.raises(ValueError, match="beta >= 1"):
        CEV(beta=0.5)


def test_cev_expectation_matches_the_noncentral_chi_square_by_monte_carlo():
    """E[X_T] = E[(σ(β-1)R_T)^(-1/(β-1))] with R a BES(4) process: R_T²/T is non-central χ²(4, R_0²/T)."""
    from suite.references.cev import CEV

    cev = CEV(sigma=0.5, beta=1.5, x0=1.0, T=1.0)
    rng = np.random.default_rng(0)
    r0 = 1 / (cev.sigma * 0.5)
    r_t = np.sqrt(rng.noncentral_chisquare(4, r0**2 / cev.T, size=2_000_000) * cev.T)
    x_t = (cev.sigma * 0.5 * r_t) ** -2.0
    assert abs(x_t.mean() - cev.expectation()) < 4 * x_t.std() / math.sqrt(x_t.size)


@pytest.mark.slow
def test_cev_monte_carlo_check_converges_to_the_closed_form():
    """The float64 Euler-Maruyama DTO estimate kept beside the closed form: its error shrinks with steps."""
    from suite.references.cev import CEV
    from suite.tasks.sde_bias import SDEBiasParams, _cev_reference

    exact = CEV(0.5, 1.5, 1.0, 1.0).gradient()
    errors = []
    for steps in (32, 512):
        params = SDEBiasParams(problem="cev", sigma=0.5, beta=1.5, reference_paths=200_000, reference_steps=steps)
        estimate, stderr, dropped = _cev_reference(params, "cpu", lambda: None)
        errors.append((abs(estimate - exact), stderr))
    assert errors[1][0] < 4 * errors[1][1] + 1e-3  # at 512 steps within noise of the closed form
