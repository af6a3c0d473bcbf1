"""cnf-2d: toy data, exact divergence, torchode adapter, smoke cells."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import MLPField, TupleField

from suite.backends import get_backend
from suite.cell import run_cell
from suite.data.toy2d import TOY2D, sample_toy2d
from suite.models.cnf_hypernet import HyperNetField
from suite.spec import Cell
from suite.tasks.cnf2d import CNF2DParams


@pytest.mark.parametrize("name", TOY2D.names())
def test_toy_generators_are_exact_in_count_and_reproducible(name):
    a = sample_toy2d(name, 1001, torch.Generator().manual_seed(3))
    b = sample_toy2d(name, 1001, torch.Generator().manual_seed(3))
    c = sample_toy2d(name, 1001, torch.Generator().manual_seed(4))
    assert a.shape == (1001, 2) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_toy_generators_leave_the_global_rng_alone_and_reject_unknown_names():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    sample_toy2d("checkerboard", 10, torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(1), before)
    with pytest.raises(ValueError, match="unknown 2-D dataset 'spiral'; valid: 2spirals, 8gaussians"):
        sample_toy2d("spiral", 10, torch.Generator())
    with pytest.raises(ValueError, match="unknown dataset 'spiral'; allowed: 2spirals"):
        CNF2DParams(dataset="spiral")


def test_hypernet_divergence_is_exact():
    field = HyperNetField(2, 16, 8).double()
    z = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    dz, minus_div = field(torch.tensor(0.4, dtype=torch.float64), (z, torch.zeros(7, 1, dtype=torch.float64)))
    trace = sum(torch.autograd.grad(dz[:, i].sum(), z, retain_graph=True)[0][:, i] for i in range(2))
    torch.testing.assert_close(-minus_div.squeeze(1), trace, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("state", ["tensor", "tuple"])
@pytest.mark.parametrize("method", ["rk4", "heun2"])
def test_torchode_runs_the_same_tableau_as_the_engine(state, method):
    pytest.importorskip("torchode")
    if state == "tensor":
        field, y0 = MLPField(dtype=torch.float32), torch.randn(6, 3, requires_grad=True)
        leaves = [y0]
    else:
        field = TupleField(dtype=torch.float32)
        y0 = (torch.randn(5, 2, requires_grad=True), torch.zeros(5, 1, requires_grad=True))
        leaves = list(y0)
    t = torch.linspace(1.0, 0.0, 8)
    results = []
    for backend in ("engine", "torchode"):
        traj = get_backend(backend).solver(method, "fp32", "none").odeint(field, y0, t)
        last = traj[-1] if state == "tensor" else traj[0][-1]
        assert (traj if state == "tensor" else traj[0]).shape[0] == 8
        results.append((last.detach(), torch.autograd.grad((last**2).sum(), [*leaves, *field.parameters()])))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_missing_torchode_makes_its_cells_unsupported(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchode", None)  # import torchode now raises ImportError
    reason = get_backend("torchode").unsupported_reason(method="rk4", precision="fp32", scaling="none", device="cpu")
    assert reason == "torchode is not installed (pip install 'ctbench[torchode]')"


SMALL = CNF2DParams(dataset="8gaussians", width=8, hidden=4, iterations=2, batch=32, val_batch=32, mmd_samples=32,
                    density_grid=4)


def _cell(backend, precision="fp32", scaling="none"):
    return Cell(task="cnf-2d", variant="8gaussians", backend=backend, method="rk4", steps=16, precision=precision,
                scaling=scaling, seed=0, profile="smoke", device="cpu", params=SMALL, spec_hash="t")


@pytest.mark.parametrize("backend", ["engine", "torchdiffeq", "torchode"])
def test_smoke_cells_give_finite_nll_at_fp32(backend, tmp_path):
    out = run_cell(_cell(backend), run_dir=tmp_path)
    assert out["status"] == "ok", out["reason"]
    m = out["metrics"]
    for name in ("val_nll", "val_nll_train_precision", "mmd", "fwd_s", "bwd_s", "total_s", "iters_done"):
        assert name in m
    assert 0 < m["val_nll"] < 20 and m["iters_done"] == 2
    assert (tmp_path / out["artifacts"]["density"]).exists()


def test_fp16_without_scaling_is_recorded_not_crashed(tmp_path):
    out = run_cell(_cell("engine", "fp16", "none"), run_dir=tmp_path)
    assert out["status"] in ("ok", "nonfinite"), out["reason"]


def test_engine_keeps_far_less_for_backward_than_torchdiffeq(tmp_path):
    engine = run_cell(_cell("engine"), run_dir=tmp_path)["metrics"]["saved_for_backward_mib"]
    direct = run_cell(_cell("torchdiffeq"), run_dir=tmp_path)["metrics"]["saved_for_backward_mib"]
    assert engine * 10 < direct


def test_floor_and_learning_curve_in_the_record_and_the_report(tmp_path):
    """entropy / kl / s.e. beside val_nll, a curve timed apart, and the report's time-to-target table, curve
    figure and floor columns built from the records alone (no artifacts needed)."""
    import json

    from suite.executors.inprocess import run_cells
    from suite.references.toy2d_entropy import entropy
    from suite.report import build_report

    params = SMALL.model_copy(update={"iterations": 4, "val_every": 2, "curve_batch": 64, "val_batch": 400})
    cells = [Cell(task="cnf-2d", variant="8gaussians", backend=b, method="rk4", steps=8, precision=p, scaling=s,
                  seed=0, profile="reference", device="cpu", params=params, spec_hash="t")
             for b, p, s in [("engine", "fp32", "none"), ("torchdiffeq", "fp32", "none")]]
    run_cells(cells, tmp_path / "run", "floors")
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    m = records[0]["metrics"]
    assert m["entropy"] == pytest.approx(entropy("8gaussians").value)
    assert m["kl"] == pytest.approx(m["val_nll"] - m["entropy"]) and m["kl"] > 0
    assert 0 < m["val_nll_stderr"] < 0.5
    curve = records[0]["extra"]["curve"]
    assert curve["iteration"] == [0, 2, 4] and curve["metric"] == "val_nll" and curve["tolerance"] == 0.02
    assert "eval_s" in records[0]["timing"]
    import shutil

    shutil.rmtree(tmp_path / "run" / "artifacts")  # records copied without their artifacts still report
    build_report(tmp_path / "run", tmp_path / "rep")
    md = (tmp_path / "rep" / "cnf-2d.md").read_text()
    assert "### Time to target" in md and "entropy H(p) (floor)" in md and "KL = NLL − H" in md
    assert "peak RSS" not in md  # in-process: the RSS is the whole run's, never shown per cell
    assert (tmp_path / "rep" / "cnf-2d-8gaussians-curves.png").exists()
    ttt = pd.read_csv(tmp_path / "rep" / "cnf-2d-time-to-target.csv")
    fp32 = ttt[ttt.backend == "engine"].iloc[0]
    assert fp32["reached at iteration"] != "not reached" and float(fp32["× fp32 engine"]) == 1.0
