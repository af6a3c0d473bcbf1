"""Closed-form references against Monte Carlo."""

from __future__ import annotations

import math

import numpy as np

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
