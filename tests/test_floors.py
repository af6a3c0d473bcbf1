"""Exact floors: the 2-D toy entropies (two independent ways each), the synthetic OT-Flow Gaussian, and the
time-to-target rule on synthetic learning curves."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from suite.data.toy2d import TOY2D
from suite.references.toy2d_entropy import ENTROPY_METHODS, entropy, entropy_knn, log_density

ALL_TOYS = sorted(TOY2D.names())
QUICK = ["checkerboard", "8gaussians", "rings", "circles"]


def test_every_generator_has_a_density_and_a_method():
    assert sorted(ENTROPY_METHODS) == ALL_TOYS


@pytest.mark.parametrize("name", ALL_TOYS)
def test_log_density_integrates_to_one(name):
    """A normalised density on a grid wide enough for every generator: checks p apart from the sampler."""
    axis = np.linspace(-7.0, 7.0, 281)
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    mass = np.exp(log_density(name, grid)).sum() * (axis[1] - axis[0]) ** 2
    assert mass == pytest.approx(1.0, abs=3e-3)


def _agree(name: str, samples: int) -> None:
    exact = entropy(name, samples)
    knn = entropy_knn(name, samples=200_000)  # never evaluates p: an independent estimate
    # Kozachenko-Leonenko's own bias near sharp edges (the checkerboard's squares) is about 0.01 nats here
    assert abs(exact.value - knn) < 0.025 + exact.error, (name, exact, knn)


@pytest.mark.parametrize("name", QUICK)
def test_entropy_agrees_with_nearest_neighbours(name):
    _agree(name, 100_000)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(ALL_TOYS) - set(QUICK)))
def test_entropy_agrees_with_nearest_neighbours_for_the_quadrature_densities(name):
    _agree(name, 100_000)


def test_the_three_cnf_datasets_agree_two_ways_at_a_small_sample():
    """The cnf-2d matrix's quadrature density (2spirals) in the default run too, at a cheaper size."""
    exact = entropy("2spirals", 20_000)
    assert exact.stderr < 0.01 and exact.quadrature_error < 1e-3
    assert abs(exact.value - entropy_knn("2spirals", samples=100_000)) < 0.03 + exact.error


def test_checkerboard_is_closed_form_and_its_support_is_exact():
    import torch

    from suite.data.toy2d import sample_toy2d

    assert entropy("checkerboard").value == math.log(32.0)
    x = sample_toy2d("checkerboard", 50_000, torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    assert np.all(log_density("checkerboard", x) == -math.log(32.0))  # every drawn point inside the support
    assert np.isneginf(log_density("checkerboard", np.array([[1.0, -1.0]]))).all()  # a white square


def test_eight_gaussians_monte_carlo_against_a_grid_integral():
    axis = np.linspace(-6.0, 6.0, 1201)
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    log_p = log_density("8gaussians", grid)
    grid_h = float(-(np.exp(log_p) * log_p).sum() * (axis[1] - axis[0]) ** 2)
    mc = entropy("8gaussians")
    assert abs(grid_h - mc.value) < mc.error + 1e-3


def test_log_density_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown 2-D dataset 'nope'"):
        log_density("nope", np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        log_density("moons", np.zeros((3, 3)))


def test_gaussian63_log_density_and_entropy_against_scipy():
    from scipy.stats import multivariate_normal

    from suite.data.gaussian63 import GAUSSIAN63 as g

    direct = multivariate_normal(mean=np.zeros(g.dim), cov=g.covariance)
    x = g.sample(500, seed=9)
    np.testing.assert_allclose(g.log_density(x), direct.logpdf(x), rtol=1e-10, atol=1e-8)
    assert g.entropy() == pytest.approx(direct.entropy(), rel=1e-12)
    big = g.sample(200_000, seed=10)
    assert -g.log_density(big).mean() == pytest.approx(g.entropy(), abs=4 * g.log_density(big).std() / 447)
    np.testing.assert_allclose(np.cov(big.T), g.covariance, atol=3e-3)
    assert np.linalg.eigvalsh(g.covariance).max() / np.linalg.eigvalsh(g.covariance).min() == pytest.approx(g.condition)


# ------------------------------------------------------------------------------------------- time to target
def test_first_reach_on_synthetic_curves():
    from suite.report._targets import first_reach, target_value

    its, secs = [0, 10, 20, 30], [0.0, 1.0, 2.0, 3.0]
    target = target_value(1.0, "lower", 0.02)
    assert target == pytest.approx(1.02)
    assert first_reach(its, secs, [3.0, 1.01, 0.9, 0.8], target, "lower").iteration == 10  # reached
    late = first_reach(its, secs, [3.0, 2.0, 1.5, 1.02], target, "lower")
    assert (late.iteration, late.train_s) == (30, 3.0)  # reached late, exactly at the target
    assert first_reach(its, secs, [3.0, 2.0, 1.5, 1.1], target, "lower") is None  # never reached
    assert first_reach(its, secs, [3.0, math.nan, 0.5, 0.5], target, "lower") is None  # non-finite first
    acc = target_value(0.90, "higher", 0.005)
    assert first_reach(its, secs, [0.1, 0.5, 0.896, 0.91], acc, "higher").iteration == 20
    assert target_value(-400.0, "lower", 0.001, relative=True) == pytest.approx(-399.6)
    with pytest.raises(ValueError):
        first_reach(its, secs, [1, 1, 1, 1], math.nan, "lower")


def _record(backend, precision, scaling, values, status="ok", seed=0):
    return {"cell_id": f"t/v/{backend}/{precision}/{scaling}/{seed}", "task": "t", "variant": "v", "method": "rk4",
            "steps": 4, "profile": "reference", "device": "cpu", "backend": backend, "precision": precision,
            "scaling": scaling, "seed": seed, "status": status, "inputs": {"dataset": "d"},
            "extra": {"curve": {"metric": "val_nll", "direction": "lower", "tolerance": 0.02, "relative": False,
                                "iteration": [0, 100, 200], "train_s": [0.0, 10.0, 20.0],
                                "value": [repr(v) if not math.isfinite(v) else v for v in values]}}}


def test_time_to_target_table_against_the_fp32_engine_row():
    from suite.report._targets import time_to_target_frame

    records = [
        _record("engine", "fp32", "none", [3.0, 1.5, 1.0]),
        _record("engine", "bf16", "none", [3.0, 1.01, 1.0]),      # reached earlier than fp32 itself
        _record("torchdiffeq", "fp16", "none", [3.0, float("nan"), float("nan")], status="nonfinite"),
        _record("engine", "fp16", "dynamic", [3.0, 2.0, 1.5]),    # never reached
    ]
    frame = time_to_target_frame(records).set_index("cell_id")
    assert frame["target"].unique() == pytest.approx([1.02])
    fp32 = frame.loc["t/v/engine/fp32/none/0"]
    assert fp32["reached_iteration"] == 200 and fp32["ratio_to_fp32_engine"] == pytest.approx(1.0)
    bf16 = frame.loc["t/v/engine/bf16/none/0"]
    assert bf16["reached_iteration"] == 100 and bf16["ratio_to_fp32_engine"] == pytest.approx(0.5)
    for never in ("t/v/torchdiffeq/fp16/none/0", "t/v/engine/fp16/dynamic/0"):
        row = frame.loc[never]
        assert pd.isna(row["reached_iteration"]) and pd.isna(row["reached_s"]) and pd.isna(row["ratio_to_fp32_engine"])


def test_time_to_target_is_the_median_over_seeds_and_absent_without_an_ok_fp32_row():
    from suite.report._targets import time_to_target_frame

    seeds = [_record("engine", "fp32", "none", [3.0, 1.5, v], seed=s) for s, v in enumerate([1.0, 1.2, 1.1])]
    frame = time_to_target_frame(seeds)
    assert frame["target"].iloc[0] == pytest.approx(1.12)
    alone = time_to_target_frame([_record("engine", "bf16", "none", [3.0, 1.0, 0.9])])
    assert math.isnan(alone["target"].iloc[0]) and pd.isna(alone["reached_iteration"].iloc[0])
