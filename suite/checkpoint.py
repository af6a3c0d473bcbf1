"""Training checkpoints: a preempted, requeued or resumed training cell continues where it stopped.

One file per cell, `<run dir>/checkpoints/<cell>.pt`, written atomically (temporary file, fsync, rename) every
K iterations and when the job is asked to stop (SLURM's SIGTERM on preemption, SIGUSR2 before its time
limit). It holds everything the next iteration depends on: the task's objects (model, optimizer, schedules,
data generators, ...), the GradScaler, the solver's learned adjoint scaler, every RNG, the iteration and the
timings so far. Its identity (cell id, spec hash, torch build) must match the cell that loads it: a checkpoint
of another spec is never restored, it is discarded with a warning.

Restoring is not training: its time is reported apart (`timing.restore_s`) and never enters the
per-iteration medians.
"""

from __future__ import annotations

import copy
import os
import random
import signal
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CheckpointPolicy", "CellPreempted", "PREEMPTION", "capture_state", "restore_state"]

FORMAT = 1


class CellPreempted(BaseException):
    """The job was asked to stop (preemption): the cell saved a checkpoint and must be requeued, not recorded.

    A BaseException, like KeyboardInterrupt: the cell kernel's `except Exception` (suite/cell.py) must not turn it into
    an `error` record.
    """


class _Preemption:
    """A flag set from a signal handler; the training loop checks it between iterations.

    Only while a checkpointing training loop runs (`armed`). At any other moment SIGTERM does what it would
    have done (ends the process), so a cell that cannot checkpoint is not kept alive by it; SIGUSR2, SLURM's
    warning before the time limit (`--signal`), is then ignored: a cell that cannot checkpoint has nothing to do
    with it, and dying of it would end the job minutes before its limit as FAILED instead of TIMEOUT.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self.armed = False
        self.ignored_warnings = 0  # SIGUSR2 while no checkpointing loop ran

    def install(self, signals=(signal.SIGTERM, signal.SIGUSR2)) -> None:
        for sig in signals:
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 — the signal module's signature
        if not self.armed:
            if signum == signal.SIGUSR2:
                self.ignored_warnings += 1
                return
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.requested = True
        self.signal_name = signal.Signals(signum).name


PREEMPTION = _Preemption()


def capture_state(obj: Any) -> Any:
    """A saveable copy of one checkpointed object's state."""
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
        return copy.deepcopy(obj.state_dict())
    if isinstance(obj, (list, dict)):
        return copy.deepcopy(obj)
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}: pass objects with state_dict/load_state_dict, "
                    "torch.Generator, or a list/dict updated in place")


def restore_state(obj: Any, state: Any) -> None:
    """Put a captured state back into the same (live) object."""
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
        obj.load_state_dict(state)
    elif isinstance(obj, list):
        obj[:] = state
    elif isinstance(obj, dict):
        obj.clear()
        obj.update(state)
    else:
        raise TypeError(f"cannot restore a {type(obj).__name__}")


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class CheckpointPolicy:
    """Where one cell's checkpoint lives, how often it is written, and whose it is."""

    path: Path
    every: int  # iterations between checkpoints; 0: only when the job is asked to stop
    identity: dict[str, str]

    def due(self, iterations_done: int) -> bool:
        return PREEMPTION.requested or (self.every > 0 and iterations_done % self.every == 0)

    def save(self, payload: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            torch.save({"format": FORMAT, "identity": self.identity, **payload}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)

    def load(self) -> dict[str, Any] | None:
        """The checkpoint of this very cell, or None (none there, or another cell's / spec's: discarded)."""
        if not self.path.exists():
            return None
        try:
            with open(self.path, "rb") as fh:
                payload = torch.load(fh, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 — an unreadable checkpoint costs progress, never the cell
            warnings.warn(f"{self.path}: unreadable checkpoint ({type(exc).__name__}: {exc}); starting the cell "
                          "from iteration 0", stacklevel=2)
            self.discard()
            return None
        if not isinstance(payload, dict):  # a file that unpickles to something else (a list, a tensor)
            warnings.warn(f"{self.path}: not a ctbench checkpoint (it holds a {type(payload).__name__}); "
                          "discarded, the cell starts from iteration 0", stacklevel=2)
            self.discard()
            return None
        if payload.get("format") != FORMAT or payload.get("identity") != self.identity:
            warnings.warn(f"{self.path}: the checkpoint belongs to {payload.get('identity')}, not to "
                          f"{self.identity}; discarded, the cell starts from iteration 0", stacklevel=2)
            self.discard()
            return None
        return payload

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
