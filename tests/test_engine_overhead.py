"""The engine's own operations per step: bounded, and independent of the number of parameter tensors.

Counts are deterministic (aten operations seen by torch.profiler), so they are checked as upper bounds;
times are never asserted (benchmarks/solver_overhead.py prints them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from solver_overhead import measure_ops, measure_times  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize(("scaling", "precision", "fwd_limit", "bwd_limit"), [
    ("none", "fp32", 16, 32),  # RK4: at most 4 per stage forward, 8 per stage backward
    ("dynamic", "fp16", 16, 48),  # plus the scaler's arithmetic
])
def test_solver_ops_per_step_are_bounded_and_do_not_grow_with_the_model(scaling, precision, fwd_limit, bwd_limit):
    rows = [measure_ops("engine", n_params, steps=6, precision=precision, scaling=scaling) for n_params in (2, 20)]
    for row in rows:
        assert row["solver_ops_per_step_fwd"] <= fwd_limit, row
        assert row["solver_ops_per_step_bwd"] <= bwd_limit, row
    assert rows[0]["solver_ops_per_step_fwd"] == rows[1]["solver_ops_per_step_fwd"]
    assert rows[0]["solver_ops_per_step_bwd"] == rows[1]["solver_ops_per_step_bwd"]


def test_the_timing_half_runs_and_reports_every_config():
    """A smoke check of the interleaved timing at a tiny size: shapes and keys, never the values."""
    configs = [("engine", "fp32", "none"), ("engine", "fp16", "dynamic")]
    times = measure_times(configs, n_params=2, steps=2, repeats=1)
    assert set(times) == set(configs)
    for row in times.values():
        assert row["repeats"] == 1 and row["steps"] == [2, 4]
        assert all(isinstance(row[k], float) for k in ("us_per_step_fwd", "us_per_step_bwd",
                                                       "solver_us_per_step_fwd", "solver_us_per_step_bwd"))
