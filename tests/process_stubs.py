"""Backends for the executor tests, importable by job processes (CTBENCH_PLUGINS=tests.process_stubs): a
solver that hangs, segfaults, exits, runs out of memory, or succeeds after a pause. Registered on import."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import torch

from suite.backends import BACKENDS, AbstractBackend, AbstractSolver, Capabilities

CAPS = Capabilities(methods=frozenset({"rk4"}), precisions=frozenset({"fp32"}), scalings=frozenset({"none"}))


class _ProcSolver(AbstractSolver):
    behaviour = "ok"

    def odeint(self, func, y0, t, params=None):
        if self.behaviour == "hang":
            time.sleep(600)  # not a cooperative deadline check: only a kill stops it
        elif self.behaviour == "spawn":  # a child of the cell (a data-loader worker, say), then a hang
            child = subprocess.Popen(["sleep", "300"])
            with open(os.environ["CTBENCH_TEST_CHILD"], "w") as fh:
                fh.write(str(child.pid))
            time.sleep(600)
        elif self.behaviour == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif self.behaviour == "exit":
            os._exit(3)
        elif self.behaviour == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB (injected)")
        elif self.behaviour == "slow":
            hold = os.environ.get("CTBENCH_TEST_HOLD")
            if hold:  # wait for the test to release the run (bounded), whatever the machine's load
                deadline = time.monotonic() + 120
                while not os.path.exists(hold) and time.monotonic() < deadline:
                    time.sleep(0.05)
            else:
                time.sleep(float(os.environ.get("CTBENCH_TEST_SLOW_S", "2")))
        marker = os.environ.get("CTBENCH_TEST_CALLS")
        if marker:  # one line per call: the tests count how often a cell really ran
            with open(marker, "a") as fh:
                fh.write(f"{self.behaviour} {os.getpid()}\n")
        return torch.stack([y0] * len(t)) * torch.exp(-t.sum())


def _backend(behaviour: str) -> AbstractBackend:
    solver_cls = type(f"Proc_{behaviour}", (_ProcSolver,), {"behaviour": behaviour})

    class ProcBackend(AbstractBackend):
        name = f"proc-{behaviour}"
        caps = CAPS

        def solver(self, method, precision, scaling):
            return solver_cls(method, precision, scaling)

    return ProcBackend()


if os.environ.get("CTBENCH_TEST_ENOSPC"):  # the run directory is full when a worker writes its record
    import errno

    import suite.executors.worker as _worker

    def _full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    _worker.write_cell_record = _full_disk

for _name in ("ok", "hang", "segv", "exit", "oom", "slow", "spawn"):
    if f"proc-{_name}" not in BACKENDS:
        BACKENDS.add(f"proc-{_name}", _backend(_name))
