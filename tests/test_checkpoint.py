"""Training checkpoints: an interrupted or preempted cell continues from its checkpoint to the same numbers it
would have reached uninterrupted; restore time stays out of the medians; foreign checkpoints are refused."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from suite.cell import checkpoint_policy, run_cell
from suite.checkpoint import PREEMPTION, CellPreempted
from suite.spec import Cell
from suite.tasks.cnf2d import CNF2DParams
from suite.tasks.soc import SOCParams

CNF = CNF2DParams(dataset="8gaussians", width=8, hidden=4, iterations=6, batch=32, val_batch=32, mmd_samples=32,
                  density_grid=4)
TIMES = ("fwd_s", "bwd_s", "iter_s", "total_s")


def _cnf(precision="fp32", scaling="none", backend="engine", spec_hash="t") -> Cell:
    return Cell(task="cnf-2d", variant="8gaussians", backend=backend, method="rk4", steps=8, precision=precision,
                scaling=scaling, seed=0, profile="smoke", device="cpu", params=CNF, spec_hash=spec_hash)


def _soc() -> Cell:
    params = SOCParams(problem="hje-2018", d=4, width=8, rank=2, iterations=6, batch=16, val_paths=32,
                       val_every=2, val_steps=8)
    return Cell(task="soc-100d", variant="hje-2018", backend="engine", method="euler-maruyama", steps=8,
                precision="fp32", scaling="none", seed=0, profile="smoke", device="cpu", params=params, spec_hash="t")


def _science(outcome: dict) -> dict:
    return {k: v for k, v in outcome["metrics"].items() if k not in TIMES}


class _StopAfter:
    """A progress hook that interrupts the cell after `n` training iterations (as Ctrl-C or a kill would)."""

    def __init__(self, n: int, iterations: int, preempt: bool = False) -> None:
        self.threshold = 0.9 * n / iterations - 1e-9
        self.preempt = preempt

    def __call__(self, fraction: float) -> None:
        if fraction >= self.threshold and fraction < 0.9:
            if self.preempt:
                PREEMPTION.requested, PREEMPTION.signal_name = True, "SIGTERM"
            else:
                raise KeyboardInterrupt


@pytest.fixture(autouse=True)
def _no_preemption():
    yield
    PREEMPTION.requested = False


@pytest.mark.parametrize("precision,scaling", [("fp32", "none"), ("fp16", "dynamic")])
def test_interrupted_cell_resumes_from_its_checkpoint_to_the_same_numbers(tmp_path, precision, scaling):
    cell = _cnf(precision, scaling)
    straight = run_cell(cell, run_dir=tmp_path / "straight")
    assert straight["status"] == "ok", straight["reason"]
    with pytest.raises(KeyboardInterrupt):  # killed after iteration 3: the checkpoint of iteration 2 remains
        run_cell(cell, run_dir=tmp_path / "r", checkpoint_every=2, progress=_StopAfter(3, CNF.iterations))
    assert checkpoint_policy(cell, tmp_path / "r", 2).path.exists()
    resumed = run_cell(cell, run_dir=tmp_path / "r", checkpoint_every=2)
    assert resumed["status"] == "ok", resumed["reason"]
    assert _science(resumed) == _science(straight)  # bit for bit: model, optimizer, scaler, RNG all restored
    info = resumed["extra"]["checkpoint"]
    assert info["restores"] == 1 and info["restored_at"] == [2]
    assert resumed["timing"]["restore_s"] == info["restore_s"] > 0
    assert not checkpoint_policy(cell, tmp_path / "r", 2).path.exists()  # a finished cell leaves none behind


def test_preemption_saves_at_the_next_iteration_and_is_not_a_record(tmp_path):
    cell = _soc()
    straight = run_cell(cell, run_dir=tmp_path / "straight")
    assert straight["status"] == "ok", straight["reason"]
    with pytest.raises(CellPreempted, match="SIGTERM after iteration 4"):
        run_cell(cell, run_dir=tmp_path / "r", checkpoint_every=0, progress=_StopAfter(4, 6, preempt=True))
    PREEMPTION.requested = False
    resumed = run_cell(cell, run_dir=tmp_path / "r", checkpoint_every=0)
    assert resumed["status"] == "ok", resumed["reason"]
    assert _science(resumed) == _science(straight)  # the evaluation history list was restored too
    assert resumed["extra"]["checkpoint"]["restored_at"] == [4]


def test_checkpoint_of_another_spec_is_discarded_with_a_warning(tmp_path):
    old = _cnf(spec_hash="old")
    with pytest.raises(KeyboardInterrupt):
        run_cell(old, run_dir=tmp_path, checkpoint_every=2, progress=_StopAfter(3, CNF.iterations))
    new = _cnf(spec_hash="new")
    checkpoint_policy(old, tmp_path, 2).path.rename(checkpoint_policy(new, tmp_path, 2).path)  # same file name
    with pytest.warns(UserWarning, match="belongs to"):
        resumed = run_cell(new, run_dir=tmp_path, checkpoint_every=2)
    assert resumed["status"] == "ok" and "checkpoint" not in resumed["extra"]


def test_unreadable_checkpoint_starts_the_cell_again(tmp_path):
    cell = _cnf()
    path = checkpoint_policy(cell, tmp_path, 2).path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        resumed = run_cell(cell, run_dir=tmp_path, checkpoint_every=2)
    assert resumed["status"] == "ok" and math.isfinite(resumed["metrics"]["val_nll"])


def test_restored_deadline_counts_the_time_already_spent(tmp_path):
    """A resumed cell does not get a fresh timeout_s: the time before the checkpoint is charged to it."""
    cell = _cnf()
    with pytest.raises(KeyboardInterrupt):
        run_cell(cell, run_dir=tmp_path, checkpoint_every=2, progress=_StopAfter(3, CNF.iterations))
    policy = checkpoint_policy(cell, tmp_path, 2)
    import torch

    payload = torch.load(policy.path, weights_only=False)
    payload["train_s"] = 1e6  # as if the first attempt had used far more than the budget
    torch.save(payload, policy.path)
    import dataclasses

    timed = dataclasses.replace(cell, timeout_s=60.0)
    out = run_cell(timed, run_dir=tmp_path, checkpoint_every=2)
    assert out["status"] == "timeout"


def test_outside_a_checkpointing_loop_sigusr2_is_ignored_and_sigterm_still_ends_the_process():
    """SLURM's time-limit warning (SIGUSR2) must not kill a cell that cannot checkpoint: dying of it ended such
    jobs minutes before their limit, recorded FAILED instead of TIMEOUT. SIGTERM keeps its default."""
    code = ("import os, signal\n"
            "from suite.checkpoint import PREEMPTION\n"
            "PREEMPTION.install()\n"
            "os.kill(os.getpid(), signal.SIGUSR2)\n"
            "print('alive', PREEMPTION.ignored_warnings, PREEMPTION.requested, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "print('not reached', flush=True)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.split() == ["alive", "1", "False"], done.stderr
    assert done.returncode == -signal.SIGTERM
