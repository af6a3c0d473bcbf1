"""Run cells and turn every outcome into a record: a failing cell never stops the run.

Statuses: ok; nonfinite (the cell's numbers went inf/NaN: a finding, not a suite error); oom; timeout
(cooperative, checked by the task's loop against the profile's timeout_s); unsupported (decided from
the backend's declared capabilities before any compute); error (anything else: a bug or bad data).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from suite.backends import get_backend
from suite.engine import ScalerExhausted
from suite.measure import PeakMemory, capture_env
from suite.precision import get_precision, tf32_mode
from suite.records import SCHEMA, RecordStore, Status, read_records
from suite.spec import Cell
from suite.tasks import CellContext, CellTimeout, NonFiniteResult, get_task

__all__ = ["run_cells", "run_cell", "RunSummary", "new_run_id", "completed_cells"]


@dataclass
class RunSummary:
    run_id: str
    out_dir: Path
    counts: Counter = field(default_factory=Counter)
    skipped: int = 0

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


def _classify(exc: BaseException) -> tuple[Status, str]:
    if isinstance(exc, (NonFiniteResult, ScalerExhausted)):
        return Status.NONFINITE, str(exc)
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return Status.OOM, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'out of memory'}"
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


def run_cell(cell: Cell, progress: Callable[[float], None] | None = None, run_dir: Path | None = None) -> dict:
    """Run one cell in this process; return the record's outcome fields (never raises for cell failures)."""
    backend = get_backend(cell.backend)
    task = get_task(cell.task)
    outcome: dict = {"metrics": {}, "timing": {}, "memory": {}, "stats": {}, "extra": {}, "artifacts": {},
                     "traceback": None}
    reason = _device_problem(cell.device) or _precision_problem(cell) or backend.unsupported_reason(
        method=cell.method, precision=cell.precision, scaling=cell.scaling, device=cell.device,
        tuple_state=task.tuple_state, kind=task.kind,
    )
    if reason:
        return {**outcome, "status": Status.UNSUPPORTED.value, "reason": reason}
    device = torch.device(cell.device)
    precision = get_precision(cell.precision)
    ctx = CellContext(
        solver=backend.solver(cell.method, cell.precision, cell.scaling), precision=precision,
        scaling=cell.scaling, method=cell.method, steps=cell.steps, seed=cell.seed, device=device,
        deadline=time.monotonic() + cell.timeout_s if cell.timeout_s else None, progress=progress,
        run_dir=run_dir, artifact_prefix=_artifact_prefix(cell),
    )
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
    outcome["timing"] = {**ctx.timing, "total_s": time.perf_counter() - started}
    outcome["memory"] = memory.read()
    outcome["stats"], outcome["extra"], outcome["artifacts"] = ctx.stats, ctx.extra, ctx.artifacts
    return {**outcome, "status": status.value, "reason": reason}


def completed_cells(records: Iterable[dict]) -> dict[str, str]:
    """cell_id → spec_hash of the cells already recorded ok (what --resume skips)."""
    return {r["cell_id"]: r["spec_hash"] for r in records if r["status"] == Status.OK.value}


def run_cells(
    cells: list[Cell],
    out_dir: Path,
    run_id: str,
    resume: bool = False,
    reporter: Callable | None = None,
) -> RunSummary:
    """Run the cells, appending one record each to out_dir/records.jsonl as soon as it ends."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = RecordStore(out_dir / "records.jsonl")
    done: dict[str, str] = {}
    if resume and store.path.exists():
        store.prepare_for_append()
        done = completed_cells(read_records(store.path))
    summary = RunSummary(run_id=run_id, out_dir=out_dir)
    env_cache: dict[str, dict] = {}
    todo = [c for c in cells if done.get(c.cell_id) != c.spec_hash]
    summary.skipped = len(cells) - len(todo)
    if reporter:
        reporter.start(len(todo), summary.skipped)
    for cell in todo:
        if reporter:
            reporter.cell_started(cell)
        started_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        outcome = run_cell(cell, progress=reporter.cell_progress if reporter else None, run_dir=out_dir)
        key = f"{cell.device}/{cell.backend}"
        if key not in env_cache:
            env_cache[key] = capture_env(cell.device, get_backend(cell.backend).versions())
        record = {
            "schema": SCHEMA, "run_id": run_id, "cell_id": cell.cell_id, "task": cell.task,
            "variant": cell.variant, "backend": cell.backend, "method": cell.method, "steps": cell.steps,
            "precision": cell.precision, "scaling": cell.scaling, "seed": cell.seed, "profile": cell.profile,
            "device": cell.device, "spec_hash": cell.spec_hash, "started_at": started_at,
            "params": cell.params.model_dump(mode="json"), "env": env_cache[key], **outcome,
        }
        store.append(record)
        summary.counts[record["status"]] += 1
        if reporter:
            reporter.cell_finished(cell, record)
    if reporter:
        reporter.finish(summary)
    (out_dir / "run.json").write_text(json.dumps({"run_id": run_id, "schema": SCHEMA}, indent=2) + "\n")
    return summary
