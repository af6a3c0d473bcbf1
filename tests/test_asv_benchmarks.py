"""The asv benchmarks import and run once (a broken benchmark fails CI, not the next asv run)."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
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


# ---------------------------------------------------------------- ratio tracks
def _ratio_module():
    spec = importlib.util.spec_from_file_location("ctbench_interleaved_ratio", PATH.parent / "interleaved_ratio.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while being defined
    spec.loader.exec_module(module)
    return module


class _FakeClock:
    """A clock that advances only when a side runs: each side's call costs its own fixed time."""

    def __init__(self) -> None:
        self.now, self.calls = 0.0, []

    def __call__(self) -> float:
        return self.now

    def side(self, name: str, cost: float, result=0.0):
        def run():
            self.calls.append(name)
            self.now += cost() if callable(cost) else cost
            return result
        return run


def test_interleaved_ratio_alternates_the_order_and_takes_the_median():
    ratio = _ratio_module()
    clock = _FakeClock()
    costs = iter([0.3, 0.1, 0.1, 0.1, 0.1, 0.1])  # the numerator's: round 0 was hit by load, the others not
    result = ratio.interleaved_ratio(clock.side("a", lambda: next(costs)), clock.side("b", 0.05), rounds=5,
                                     number=1, warmup=1, clock=clock)
    assert clock.calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B / B A
    assert result.per_round == pytest.approx((0.1 / 0.05, 2.0, 2.0, 2.0, 2.0))
    assert result.median == pytest.approx(2.0)  # the round the load hit does not move it
    # a load that lands on one round's numerator only: 6× that round, the median still 2
    clock2 = _FakeClock()
    costs2 = iter([0.1, 0.6, 0.1, 0.1, 0.1, 0.1])
    loaded = ratio.interleaved_ratio(clock2.side("a", lambda: next(costs2)), clock2.side("b", 0.05), rounds=5,
                                     number=1, clock=clock2)
    assert loaded.per_round[0] == pytest.approx(12.0) and loaded.median == pytest.approx(2.0)
    assert loaded.spread == pytest.approx(6.0)


def test_interleaved_ratio_times_number_calls_per_sample():
    ratio = _ratio_module()
    clock = _FakeClock()
    result = ratio.interleaved_ratio(clock.side("a", 0.2), clock.side("b", 0.1), rounds=3, number=4, warmup=0,
                                     clock=clock)
    assert clock.calls.count("a") == clock.calls.count("b") == 12
    assert result.numerator_s == pytest.approx((0.2, 0.2, 0.2)) and result.median == pytest.approx(2.0)


@pytest.mark.parametrize(("bad", "message"), [
    ("raise", "the denominator side failed: RuntimeError: CUDA error: injected"),
    ("nan", "the denominator side returned a non-finite value"),
    ("nan-tensor", "the denominator side returned a non-finite value"),
])
def test_interleaved_ratio_refuses_when_one_side_fails(bad, message):
    import torch

    ratio = _ratio_module()
    clock = _FakeClock()
    calls = {"n": 0}

    def failing():
        calls["n"] += 1
        clock.now += 0.1
        if calls["n"] < 3:  # it warms up and runs a round first: a failure mid-measurement still refuses
            return 1.0
        if bad == "raise":
            raise RuntimeError("CUDA error: injected")
        return float("nan") if bad == "nan" else torch.tensor([1.0, float("nan")])

    with pytest.raises(ratio.RatioRefused, match=re.escape(message)):
        ratio.interleaved_ratio(clock.side("a", 0.1), failing, rounds=4, number=1, clock=clock)


def test_interleaved_ratio_refuses_a_clock_that_did_not_move_and_bad_arguments():
    ratio = _ratio_module()
    with pytest.raises(ratio.RatioRefused, match="took 0.0 s by the clock"):
        ratio.interleaved_ratio(lambda: None, lambda: None, rounds=1, clock=lambda: 1.0)
    with pytest.raises(ValueError, match="rounds and number must be at least 1"):
        ratio.interleaved_ratio(lambda: None, lambda: None, rounds=0)


def test_ratio_and_count_tracks_give_real_numbers(asv_module):
    suite = asv_module.EngineVsTorchdiffeq()
    suite.setup("fp32")
    assert 0.05 < suite.track_time_ratio("fp32") < 20  # a ratio of two real solves, never asserted tighter
    overhead = asv_module.SolverOverhead()
    overhead.setup("fp32/none")
    fwd, bwd = overhead.track_ops_per_step_fwd("fp32/none"), overhead.track_ops_per_step_bwd("fp32/none")
    assert 0 < fwd <= 16 and 0 < bwd <= 32  # the bounds tests/test_engine_overhead.py checks
    assert asv_module.EngineLowPrecision.track_time_ratio.unit == "low precision ÷ fp32 (time)"


@pytest.mark.slow  # two interpreter starts with torch (≈ 6 s): CI's slow step runs it
def test_asv_checks_and_discovers_every_benchmark_without_running_one():
    """`asv check` imports the suite as asv does; asv's own discovery lists what it will run. Nothing is timed."""
    root = PATH.parents[2]
    done = subprocess.run([sys.executable, "-m", "asv", "check", "--python=same"], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "No problems found" in done.stdout, done.stdout + done.stderr
    listing = ("import sys; sys.path.insert(0, 'benchmarks'); from asv_runner.discovery import disc_benchmarks; "
               "print('\\n'.join(sorted({b.name for b in disc_benchmarks('asv')})))")
    found = subprocess.run([sys.executable, "-c", listing], cwd=root, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr
    assert set(found.stdout.split()) == {f"benchmarks.{name}" for name in (
        "SolverSuite.time_forward_backward", "SolverSuite.peakmem_forward_backward",
        "EngineVsTorchdiffeq.track_time_ratio", "EngineLowPrecision.track_time_ratio",
        "SolverOverhead.track_ops_per_step_fwd", "SolverOverhead.track_ops_per_step_bwd",
        "CudaMemorySuite.track_cuda_peak_mib", "AccuracySuite.track_stiff_rel_err_grad_y0",
        "AccuracySuite.track_gbm_bias", "AccuracySuite.track_cnf_smoke_nll")}


# ---------------------------------------------------------------- the verdict on asv continuous
VERDICT = Path(__file__).resolve().parent.parent / "benchmarks" / "asv_verdict.py"
CONTINUOUS = """
| Change   | Before [0a1b2c3d]   | After [4e5f6a7b]   |   Ratio | Benchmark (Parameter)   |
|----------|---------------------|--------------------|---------|-------------------------|
| +        | 29.1±0.5ms | 45.0±1ms | 1.55 | benchmarks.SolverSuite.time_forward_backward('engine', 'fp32') |
| -        | 38.3±2ms | 24.7±0.4ms | 0.64 | benchmarks.SolverSuite.time_forward_backward('torchdiffeq', 'fp32') |
{extra}
SOME BENCHMARKS HAVE CHANGED SIGNIFICANTLY.
"""


def _verdict(text: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "continuous.txt"
    path.write_text(text)
    return subprocess.run([sys.executable, str(VERDICT), str(path)], capture_output=True, text=True, timeout=60)


def test_the_verdict_reports_noisy_absolute_times_without_failing(tmp_path):
    done = _verdict(CONTINUOUS.format(extra=""), tmp_path)
    assert done.returncode == 0, done.stdout
    assert "trusted: no change" in done.stdout
    assert "noisy on a shared CPU: 2 change(s)" in done.stdout
    assert "worse  ×1.55   absolute time" in done.stdout


def test_the_verdict_fails_on_a_worse_ratio_track_and_names_it(tmp_path):
    extra = ("| +        | 0.81±0.01            | 1.35±0.02           |    1.67 | "
             "benchmarks.EngineVsTorchdiffeq.track_time_ratio('fp32') |\n"
             "| !        | 12                   | failed              |     n/a | "
             "benchmarks.SolverOverhead.track_ops_per_step_bwd('fp16/dynamic') |")
    done = _verdict(CONTINUOUS.format(extra=extra), tmp_path)
    assert done.returncode == 1, done.stdout
    assert "trusted: 2 change(s)" in done.stdout
    assert "ratio track" in done.stdout and "now failing" in done.stdout
    assert "REGRESSION: 2 trusted benchmark(s) worse or failing" in done.stdout


def test_the_verdict_names_an_unreadable_file(tmp_path):
    done = subprocess.run([sys.executable, str(VERDICT), str(tmp_path / "missing.txt")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "cannot read" in done.stderr
