"""One cell, in this process, and the record it leaves: the kernel every executor uses.

Statuses: ok; nonfinite (the cell's numbers went inf/NaN: a finding, not a suite error); oom (any
allocator failure, CPU or GPU); timeout (cooperative, checked by the task's loop against the profile's
timeout_s); unsupported (decided from the backend's declared capabilities before any compute); error
(anything else: a bug or bad data). A failing cell never raises here: its failure is its outcome.

A record is header (what is known before the cell runs: `record_header`) + outcome (what it did: `run_cell`,
or `failure_outcome` for a cell whose process ended without one), put together by `make_record` alone.
"""

from __future__ import annotations

import json
import math
import re
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from suite.backends import get_backend
from suite.checkpoint import CheckpointPolicy
from suite.deadline import cell_deadline
from suite.engine import OnFailure, ScalerExhausted
from suite.measure import PeakMemory, capture_env, device_class, torch_build
from suite.precision import get_precision, tf32_mode
from suite.records import SCHEMA, Status
from suite.scaling import OnOverflow
from suite.spec import Cell
from suite.tasks import CellContext, CellTimeout, NonFiniteResult, get_task

__all__ = ["run_cell", "record_header", "RecordHeaders", "make_record", "failure_outcome", "checkpoint_policy",
           "cell_inputs", "unsupported_reason", "is_out_of_memory"]


def _device_problem(device: str) -> str | None:
    if device == "cuda" and not torch.cuda.is_available():
        return "CUDA was requested but torch.cuda.is_available() is False on this machine"
    return None


def _precision_problem(cell: Cell) -> str | None:
    precision = get_precision(cell.precision)
    if cell.device not in precision.devices:
        return (f"precision {cell.precision} exists only on {', '.join(sorted(precision.devices))} "
                f"(TF32 is a CUDA tensor-core mode; the fp32 cell is its CPU counterpart)")
    return None


# What allocators say when they fail: the CPU allocator ("DefaultCPUAllocator: can't allocate memory"),
# CUDA/HIP/MPS/XPU caching allocators ("... out of memory"), and cuBLAS/cuDNN workspace allocations.
_OOM_MESSAGE = re.compile(
    r"can't allocate memory|out of memory|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED"
    r"|Cannot allocate memory|failed to allocate", re.IGNORECASE)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and bool(_OOM_MESSAGE.search(str(exc)))


def _first_line(exc: BaseException, default: str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else default


def _classify(exc: BaseException) -> tuple[Status, str]:
    if isinstance(exc, (NonFiniteResult, ScalerExhausted)):
        return Status.NONFINITE, str(exc)
    if is_out_of_memory(exc):
        return Status.OOM, f"{type(exc).__name__}: {_first_line(exc, 'out of memory')}"
    if isinstance(exc, CellTimeout):
        return Status.TIMEOUT, str(exc)
    return Status.ERROR, f"{type(exc).__name__}: {exc}"


def _finite_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    clean, bad = {}, []
    for name, value in metrics.items():
        value = float(value)
        clean[name] = value
        if not math.isfinite(value):
            bad.append(name)
    return clean, bad


def _artifact_prefix(cell: Cell) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", cell.cell_id)


def unsupported_reason(cell: Cell, check_device: bool = True) -> str | None:
    """Why the cell cannot run here, decided from declared capabilities alone (None when it can).

    `check_device=False`: the cell runs on another machine (a SLURM node), which decides about its device.
    """
    task = get_task(cell.task)
    device_problem = _device_problem(cell.device) if check_device else None
    return device_problem or _precision_problem(cell) or _memory_problem(cell) or get_backend(
        cell.backend).unsupported_reason(
        method=cell.method, precision=cell.precision, scaling=cell.scaling, device=cell.device,
        tuple_state=task.tuple_state, kind=task.kind,
    )


def _memory_problem(cell: Cell) -> str | None:
    """A memory setting other than the default needs a backend that has the knob (the engine's ODE solver)."""
    if cell.memory == "states":
        return None
    backend = get_backend(cell.backend)
    if not backend.caps.memory_settings or get_task(cell.task).kind != "ode":
        return (f"{cell.backend} has no memory setting {cell.memory!r}: only the engine's ODE solver takes "
                "memory= (other backends keep what autograd or their adjoint keeps)")
    return None


def cell_inputs(cell: Cell) -> dict[str, str]:
    """What a cell's numbers depend on beyond its spec: the task's data identity, device class, torch build."""
    try:
        identity = get_task(cell.task).input_identity(cell.params)
    except Exception as exc:  # noqa: BLE001 — an unidentifiable input is recorded, and fails the cell itself
        identity = {"dataset": f"unidentified ({type(exc).__name__}: {exc})"}
    return {**identity, "device_class": device_class(cell.device), "torch": torch_build()}


def checkpoint_policy(cell: Cell, run_dir: Path, every: int) -> CheckpointPolicy:
    """The cell's checkpoint file in the run directory (training cells use it; others never write one)."""
    return CheckpointPolicy(path=run_dir / "checkpoints" / f"{_artifact_prefix(cell)}.pt", every=every,
                            identity={"cell_id": cell.cell_id, "spec_hash": cell.spec_hash, "torch": torch_build()})


def run_cell(cell: Cell, progress: Callable[[float], None] | None = None, run_dir: Path | None = None,
             checkpoint_every: int | None = None, on_detail: Callable[[dict], None] | None = None) -> dict:
    """Run one cell in this process; return the record's outcome fields (never raises for cell failures).

    With `checkpoint_every` (and a run directory) a training cell saves a checkpoint every that many
    iterations (0: only when the job is asked to stop) and starts from one it finds; the checkpoint is
    removed once the cell has an outcome. `CellPreempted` and KeyboardInterrupt propagate (no outcome).
    """
    backend = get_backend(cell.backend)
    task = get_task(cell.task)
    outcome: dict = {"metrics": {}, "timing": {}, "memory": {}, "stats": {}, "extra": {}, "artifacts": {},
                     "traceback": None}
    reason = unsupported_reason(cell)
    if reason:
        return {**outcome, "status": Status.UNSUPPORTED.value, "reason": reason}
    device = torch.device(cell.device)
    precision = get_precision(cell.precision)
    solver = backend.solver(cell.method, cell.precision, cell.scaling)
    if cell.memory != "states":
        solver.memory = cell.memory
    if cell.on_overflow == OnOverflow.SKIP:
        solver.on_failure = OnFailure.NONFINITE  # the engine hands back NaN gradients; the training loop skips the step
    ctx = CellContext(
        solver=solver, precision=precision, on_overflow=cell.on_overflow,
        scaling=cell.scaling, method=cell.method, steps=cell.steps, seed=cell.seed, device=device,
        deadline=time.monotonic() + cell.timeout_s if cell.timeout_s else None, progress=progress,
        on_detail=on_detail,
        run_dir=run_dir, artifact_prefix=_artifact_prefix(cell),
    )
    if run_dir is not None and checkpoint_every is not None:
        ctx.checkpoint = checkpoint_policy(cell, run_dir, checkpoint_every)
    ctx.extra["precision_policy"] = solver.precision_policy
    torch.manual_seed(cell.seed)  # for code outside our control; tasks use ctx.generator()
    started = time.perf_counter()
    status, reason = Status.OK, ""
    memory = PeakMemory(device)
    try:
        with cell_deadline(ctx.deadline), tf32_mode(precision.tf32), memory:
            metrics = task.run(cell.params, ctx)
        outcome["metrics"], bad = _finite_metrics(metrics)
        if bad:
            status, reason = Status.NONFINITE, f"non-finite metric(s): {', '.join(bad)}"
    except Exception as exc:  # noqa: BLE001 — every failure becomes a status; the run goes on
        status, reason = _classify(exc)
        if status == Status.ERROR:
            outcome["traceback"] = traceback.format_exc(limit=8)
    finally:
        if device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()
    if ctx.checkpoint is not None:
        ctx.checkpoint.discard()  # the cell has its outcome: a later run must not continue a finished one
    outcome["timing"] = {**ctx.timing, "total_s": time.perf_counter() - started}
    outcome["memory"] = memory.read()
    outcome["stats"], outcome["extra"], outcome["artifacts"] = ctx.stats, ctx.extra, ctx.artifacts
    return {**outcome, "status": status.value, "reason": reason}


def record_header(cell: Cell, run_id: str, inputs: dict, env: dict) -> dict:
    """Every record field that is known before the cell runs (the outcome fields come from `run_cell`)."""
    return {
        "schema": SCHEMA, "run_id": run_id, "cell_id": cell.cell_id, "task": cell.task,
        "variant": cell.variant, "backend": cell.backend, "method": cell.method, "steps": cell.steps,
        "precision": cell.precision, "scaling": cell.scaling, "seed": cell.seed, "profile": cell.profile,
        "device": cell.device, "spec_hash": cell.spec_hash, "memory_setting": cell.memory,
        "spec": {"path": cell.spec_path, "sha256": cell.spec_sha256},
        "inputs": inputs, "params": cell.params.model_dump(mode="json"), "env": env,
    }


class RecordHeaders:
    """The record headers of one run, each cell's inputs (per task, device and parameters) and environment
    (per device and backend) worked out once: every executor keys them the same way.

    `env_device`: the device whose environment is recorded when it is not the cell's own (the coordinator
    records the machine it runs on, for the records of cells whose job wrote none).
    """

    def __init__(self, run_id: str, env_device: str | None = None) -> None:
        self.run_id, self.env_device = run_id, env_device
        self._inputs: dict[str, dict] = {}
        self._env: dict[tuple[str, str], dict] = {}

    def inputs(self, cell: Cell) -> dict:
        key = json.dumps([cell.task, cell.device, cell.params.model_dump(mode="json")], sort_keys=True)
        if key not in self._inputs:
            self._inputs[key] = cell_inputs(cell)
        return self._inputs[key]

    def env(self, cell: Cell) -> dict:
        key = (cell.device, cell.backend)
        if key not in self._env:
            self._env[key] = capture_env(self.env_device or cell.device, get_backend(cell.backend).versions())
        return self._env[key]

    def __call__(self, cell: Cell) -> dict:
        return record_header(cell, self.run_id, self.inputs(cell), self.env(cell))


def failure_outcome(status: str, reason: str, detail: str | None = None) -> dict:
    """The outcome fields of a cell that did not run to an outcome of its own (unsupported here, or its
    process ended without writing one)."""
    return {"status": status, "reason": reason, "metrics": {}, "timing": {}, "memory": {}, "stats": {},
            "extra": {}, "artifacts": {}, "traceback": detail}


def make_record(header: dict, started_at: str, outcome: dict, record_id: str | None = None,
                executor: dict | None = None) -> dict:
    """The one place a record is put together, by every executor: header, start time, outcome, and for
    the executors that run cells in other processes the submission's id and where it ran."""
    record = {**header, "started_at": started_at, **outcome}
    if record_id is not None:
        record["record_id"] = record_id
    if executor is not None:
        record["executor"] = executor
    return record
