"""soc-100d: the task against its exact reference, on CPU at smoke scale."""

from __future__ import annotations

import math

import pytest

from suite.cell import run_cell
from suite.spec import Cell
from suite.tasks import get_task
from suite.tasks.soc import SOCParams

SMALL = dict(width=8, batch=8, iterations=3, val_paths=64, val_every=2)


def _cell(variant, precision="fp32", **overrides):
    params = SOCParams(problem=variant.replace("-random-walk", ""),
                       sampler="random-walk" if "random-walk" in variant else "pmp", **{**SMALL, **overrides})
    return Cell(task="soc-100d", variant=variant, backend="engine", method="euler-maruyama", steps=5,
                precision=precision, scaling="none", seed=0, profile="smoke", device="cpu", params=params,
                spec_hash="t")


def test_reference_is_the_cole_hopf_value():
    assert round(get_task("soc-100d").reference(SOCParams(problem="hje-2018"))["value_reference"], 3) == 4.590


@pytest.mark.parametrize("variant", ["slide", "slide-random-walk", "neuralsoc-code"])
def test_smoke_cells_report_objective_against_the_reference(variant, tmp_path):
    out = run_cell(_cell(variant), run_dir=tmp_path)
    assert out["status"] == "ok", out["reason"]
    m = out["metrics"]
    assert math.isclose(m["gap_rel"], (m["control_objective"] - m["value_reference"]) / abs(m["value_reference"]))
    assert m["control_objective_stderr"] > 0 and m["iters_done"] == 3
    assert (tmp_path / out["artifacts"]["curves"]).exists()


def test_low_precision_roll_out_is_recorded_not_crashed(tmp_path):
    out = run_cell(_cell("slide", "fp16"), run_dir=tmp_path)
    assert out["status"] in ("ok", "nonfinite"), out["reason"]
