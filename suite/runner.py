"""Run cells and turn every outcome into a record: a failing cell never stops the run.

Statuses: ok; nonfinite (the cell's numbers went inf/NaN: a finding, not a suite error); oom (any
allocator failure, CPU or GPU); timeout (cooperative, checked by the task's loop against the profile's
timeout_s); unsupported (decided from the backend's declared capabilities before any compute); error
(anything else: a bug or bad data).

Resume: a cell runs again when it has no record, when its spec changed, or when its latest record ended in
`error`; `retry_failed` also re-runs nonfinite, oom and timeout cells; an unsupported cell runs again only
when the reason changed (a dependency was installed). A recorded cell whose inputs (data set and its
fingerprint, device class, torch build) differ from what it would use now is never silently kept or
mixed: the run refuses, or re-runs those cells with `rerun_changed`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from suite.backends import get_backend
from suite.checkpoint import CheckpointPolicy
from suite.engine import ScalerExhausted
from suite.executors.exchange import now_iso, running_marker, this_host, write_json_atomic, write_plan
from suite.measure import PeakMemory, capture_env, device_class, torch_build
from suite.precision import get_precision, tf32_mode
from suite.records import (
    SCHEMA,
    RecordStore,
    RecordsWriteError,
    Status,
    latest_by_cell,
    read_records,
    validate_run_id,
)
from suite.spec import Cell
from suite.tasks import CellContext, CellTimeout, NonFiniteResult, get_task

__all__ = ["NOT_KNOWABLE_HERE", "run_cells", "run_cell", "record_header", "checkpoint_policy", "RunSummary",
           "new_run_id", "plan_resume", "ResumeMismatch", "cell_inputs", "unsupported_reason", "RunStoreError"]

# Which statuses a resume runs again: `error` always (a bug or bad data, worth another try once fixed);
# the findings and resource failures only when asked (`retry_failed`).
RERUN_ALWAYS = frozenset({Status.ERROR.value})
RERUN_ON_RETRY = frozenset({Status.NONFINITE.value, Status.OOM.value, Status.TIMEOUT.value})


class ResumeMismatch(ValueError):
    """Recorded cells used other inputs (data set, device, torch build) than they would use now."""


class RunStoreError(RuntimeError):
    """A record could not be written; the run stopped so that no further computed result is lost."""


@dataclass
class RunSummary:
    run_id: str
    out_dir: Path
    counts: Counter = field(default_factory=Counter)
    skipped: int = 0
    kept: Counter = field(default_factory=Counter)  # status → cells kept from earlier records (resume)

    @property
    def n_errors(self) -> int:
        return self.counts[Status.ERROR.value]


def new_run_id(profile: str) -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{profile}"


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
             checkpoint_every: int | None = None) -> dict:
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
    if cell.on_overflow == "skip":
        solver.on_failure = "nonfinite"  # the engine hands back NaN gradients; the training loop skips the step
    ctx = CellContext(
        solver=solver, precision=precision, on_overflow=cell.on_overflow,
        scaling=cell.scaling, method=cell.method, steps=cell.steps, seed=cell.seed, device=device,
        deadline=time.monotonic() + cell.timeout_s if cell.timeout_s else None, progress=progress,
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
        with tf32_mode(precision.tf32), memory:
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


@dataclass
class ResumePlan:
    todo: list[Cell]
    kept: Counter = field(default_factory=Counter)  # status → cells kept from earlier records
    mismatched: list[tuple[Cell, dict, dict]] = field(default_factory=list)  # (cell, recorded, now)


# An input the resuming machine cannot know (a SLURM login node without the compute nodes' GPUs): not compared.
NOT_KNOWABLE_HERE = "(not knowable on this machine)"


def _differences(recorded: dict, now: dict) -> dict[str, tuple[str, str]]:
    keys = sorted(set(recorded) | set(now))
    return {k: (recorded.get(k, "(not recorded)"), now.get(k, "(none)")) for k in keys
            if recorded.get(k) != now.get(k) and now.get(k) != NOT_KNOWABLE_HERE}


def plan_resume(cells: list[Cell], records: list[dict], retry_failed: bool = False, rerun_changed: bool = False,
                inputs: Callable[[Cell], dict] = cell_inputs) -> ResumePlan:
    """Which cells a resumed run runs again (see the module docstring for the rules)."""
    latest = latest_by_cell(records)
    rerun = RERUN_ALWAYS | (RERUN_ON_RETRY if retry_failed else frozenset())
    plan = ResumePlan(todo=[])
    for cell in cells:
        record = latest.get(cell.cell_id)
        if record is None or record["spec_hash"] != cell.spec_hash or record["status"] in rerun:
            plan.todo.append(cell)
            continue
        if record["status"] == Status.UNSUPPORTED.value:
            if unsupported_reason(cell) != record["reason"]:
                plan.todo.append(cell)  # something changed: a dependency was installed, another device
            else:
                plan.kept[record["status"]] += 1
            continue
        now = inputs(cell)
        if _differences(record["inputs"], now):
            plan.mismatched.append((cell, record["inputs"], now))
            if rerun_changed:
                plan.todo.append(cell)
            continue
        plan.kept[record["status"]] += 1
    if plan.mismatched and not rerun_changed:
        raise ResumeMismatch(_mismatch_message(plan.mismatched))
    return plan


def _mismatch_message(mismatched: list[tuple[Cell, dict, dict]]) -> str:
    cell, recorded, now = mismatched[0]
    diff = "; ".join(f"{k}: recorded {a!r}, now {b!r}" for k, (a, b) in _differences(recorded, now).items())
    more = f" (and {len(mismatched) - 1} more cell(s))" if len(mismatched) > 1 else ""
    return (f"cannot resume: {cell.cell_id}{more} was recorded with other inputs than it would use now — {diff}. "
            "Resuming would mix them in one table. Run into a new --out, restore the old inputs, or add "
            "--rerun-changed to run those cells again here (their new records supersede the old ones).")


def _save_unsaved(record: dict, run_id: str) -> Path | None:
    """Last resort when the run directory cannot be written: keep the computed record somewhere."""
    path = Path(tempfile.gettempdir()) / f"ctbench-unsaved-{run_id}.jsonl"
    try:
        RecordStore(path).append(record)
        return path
    except OSError:
        return None


def run_cells(
    cells: list[Cell],
    out_dir: Path,
    run_id: str,
    resume: bool = False,
    reporter: Callable | None = None,
    retry_failed: bool = False,
    rerun_changed: bool = False,
    checkpoint_every: int | None = None,
) -> RunSummary:
    """Run the cells, appending one record each to out_dir/records.jsonl as soon as it ends.

    The caller holds the run directory's lock (suite.lock.RunLock) when another process could write to it.
    """
    validate_run_id(run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = RecordStore(out_dir / "records.jsonl")
    summary = RunSummary(run_id=run_id, out_dir=out_dir)
    todo = cells
    if resume:
        _merge_job_records(out_dir, {c.cell_id for c in cells})
    if resume and store.path.exists():
        store.prepare_for_append()  # a damaged last line is moved aside first: never built upon
        previous = read_records(store.path)
        plan = plan_resume(cells, previous, retry_failed=retry_failed, rerun_changed=rerun_changed)
        todo = plan.todo
        summary.kept = plan.kept
        if previous:
            run_id = summary.run_id = previous[0]["run_id"]  # one run id per records file
    summary.skipped = len(cells) - len(todo)
    env_cache: dict[str, dict] = {}
    inputs_cache: dict[str, dict] = {}
    if reporter:
        reporter.start(len(todo), summary.skipped, summary.kept)
    write_plan(out_dir, run_id, "inprocess", [c.cell_id for c in todo])  # what `ctbench status` shows
    try:
        for cell in todo:
            if reporter:
                reporter.cell_started(cell)
            marker = running_marker(out_dir, cell.cell_id)
            write_json_atomic(marker, {"cell_id": cell.cell_id, "pid": os.getpid(), "host": this_host(),
                                       "started_at": now_iso(), "state": "running"})
            started_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
            key = json.dumps([cell.task, cell.device, cell.params.model_dump(mode="json")], sort_keys=True)
            if key not in inputs_cache:
                inputs_cache[key] = cell_inputs(cell)
            outcome = run_cell(cell, progress=reporter.cell_progress if reporter else None, run_dir=out_dir,
                               checkpoint_every=checkpoint_every)
            env_key = f"{cell.device}/{cell.backend}"
            if env_key not in env_cache:
                env_cache[env_key] = capture_env(cell.device, get_backend(cell.backend).versions())
            record = {**record_header(cell, run_id, inputs_cache[key], env_cache[env_key]), "started_at": started_at,
                      **outcome}
            try:
                store.append(record)
            except RecordsWriteError as exc:
                saved = _save_unsaved(record, run_id)
                where = f"its record was saved to {saved}" if saved else "its record could not be saved anywhere"
                raise RunStoreError(f"{exc.strerror}; the run stopped after {cell.cell_id} ({record['status']}): "
                                    f"{where}. Free space or fix permissions, then resume with --resume") from exc
            marker.unlink(missing_ok=True)
            summary.counts[record["status"]] += 1
            if reporter:
                reporter.cell_finished(cell, record)
    finally:
        if reporter:
            reporter.finish(summary)
    _write_run_json(out_dir, run_id)
    return summary


def _merge_job_records(out_dir: Path, wanted: set[str]) -> None:
    """A run that other executors worked on: merge its jobs' records first; refuse while its jobs still run
    (this process cannot adopt them, and would run their cells a second time)."""
    from suite.executors import ExecutorConfig
    from suite.executors.coordinator import reconcile
    from suite.executors.exchange import Manifest

    if not Manifest(out_dir).path.exists():
        return
    state = reconcile(out_dir, ExecutorConfig())
    live = sorted(cell_id for cell_id in state.in_flight if cell_id in wanted)
    if live:
        entry = state.in_flight[live[0]]
        more = f" (and {len(live) - 1} more)" if len(live) > 1 else ""
        raise RunStoreError(f"{live[0]}{more} is still running in {entry['executor']} job {entry['job_id']}; "
                            f"resume with --executor {entry['executor']} (it adopts running jobs) or wait for it")


def _write_run_json(out_dir: Path, run_id: str) -> None:
    path = out_dir / "run.json"
    tmp = path.with_name(".run.json.tmp")
    try:
        tmp.write_text(json.dumps({"run_id": run_id, "schema": SCHEMA}, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # run.json is a convenience; the records are what counts
