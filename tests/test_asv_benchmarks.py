"""The asv benchmarks import and run once (a broken benchmark fails CI, not the next asv run)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "asv" / "benchmarks.py"


@pytest.fixture(scope="module")
def asv_module():
    spec = importlib.util.spec_from_file_location("ctbench_asv_benchmarks", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("backend", "precision"), [("engine", "fp32"), ("engine-autocast", "bf16"),
                                                    ("torchdiffeq", "bf16"), ("torchdiffeq-adjoint", "fp32")])
def test_solver_benchmarks_run(asv_module, backend, precision):
    suite = asv_module.SolverSuite()
    suite.setup(backend, precision)
    suite.time_forward_backward(backend, precision)
    suite.peakmem_forward_backward(backend, precision)
    with pytest.raises(NotImplementedError):  # CUDA-only: its setup makes asv skip it on a CPU run
        asv_module.CudaMemorySuite().setup(backend, precision)


def test_unsupported_combinations_are_skipped(asv_module):
    with pytest.raises(NotImplementedError, match="tf32"):
        asv_module.SolverSuite().setup("engine", "tf32")


def test_accuracy_tracks_are_real_cell_numbers(asv_module):
    suite = asv_module.AccuracySuite()
    assert 0 < suite.track_stiff_rel_err_grad_y0("fp16", "dynamic") < 2e-2
    assert 0 <= suite.track_gbm_bias() < 0.1
    assert math.isfinite(suite.track_cnf_smoke_nll())
    names = asv_module.SolverSuite.param_names, asv_module.AccuracySuite.track_stiff_rel_err_grad_y0.param_names
    assert names == (["backend", "precision"], ["precision", "scaling"])
