"""The engine's own operations per step: bounded, and independent of the number of parameter tensors.

Counts are deterministic (aten operations seen by torch.profiler), so they are checked as upper bounds;
times are never asserted (benchmarks/solver_overhead.py prints them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from solver_overhead import measure_ops  # noqa: E402

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
