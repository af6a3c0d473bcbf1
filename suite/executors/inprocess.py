"""The in-process executor (the default): every cell in this process, one after another, a record each as
soon as it ends; the sibling of `local` and `slurm` (suite/executors/coordinator.py)."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from suite.cell import RecordHeaders, make_record, run_cell
from suite.executors.config import ExecutorConfig
from suite.executors.exchange import (
    Manifest,
    RunningMarker,
    now_iso,
    running_marker,
    save_unsaved,
    this_host,
    write_plan,
)
from suite.executors.reconcile import reconcile
from suite.executors.reporter import RunReporter
from suite.records import SCHEMA, RecordStore, RecordsWriteError, Status, read_records, validate_run_id
from suite.resume import plan_resume
from suite.spec import Cell

__all__ = ["run_cells", "RunSummary", "RunStoreError", "new_run_id"]


class RunStoreError(RuntimeError):
    """A record could not be written; the run stopped so that no further computed result is lost."""


@dataclass
class RunSummary:
    """What a run did: cells recorded by status, cells handed to a job engine that have no record yet
    (SLURM: the command returns once they are submitted), and cells kept from earlier records."""

    run_id: str
    out_dir: Path
    statuses: Counter[Status] = field(default_factory=Counter)
    submitted: int = 0
    skipped: int = 0
    kept: Counter = field(default_factory=Counter)  # status → cells kept from earlier records (resume)

    def recorded(self, status: str) -> None:
        self.statuses[Status(status)] += 1

    @property
    def counts(self) -> Counter[str]:
        """statuses and `submitted` together, by name: what the CLI prints."""
        merged: Counter[str] = Counter({str(k): v for k, v in self.statuses.items()})
        if self.submitted:
            merged["submitted"] = self.submitted
        return merged

    def counts_text(self) -> str:
        return ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items())) or "nothing to run"

    @property
    def n_errors(self) -> int:
        return self.statuses[Status.ERROR]


def new_run_id(profile: str) -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{profile}"


def run_cells(
    cells: list[Cell],
    out_dir: Path,
    run_id: str,
    resume: bool = False,
    reporter: RunReporter | None = None,
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
    headers = RecordHeaders(run_id)
    if reporter:
        reporter.start(len(todo), summary.skipped, summary.kept)
    write_plan(out_dir, run_id, "inprocess", [c.cell_id for c in todo])  # what `ctbench status` shows
    try:
        for cell in todo:
            if reporter:
                reporter.cell_started(cell)
            marker = RunningMarker(running_marker(out_dir, cell.cell_id), {
                "cell_id": cell.cell_id, "pid": os.getpid(), "host": this_host(), "started_at": now_iso(),
                "state": "running"})
            started_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
            headers.inputs(cell)  # before the cell runs: its data identity as it was given to the cell
            outcome = run_cell(cell, progress=_both(marker.progress, reporter and reporter.cell_progress),
                               run_dir=out_dir, checkpoint_every=checkpoint_every,
                               on_detail=_both(marker.detail, getattr(reporter, "cell_detail", None)))
            record = make_record(headers(cell), started_at, outcome, executor={"kind": "inprocess"})
            try:
                store.append(record)
            except RecordsWriteError as exc:
                saved = save_unsaved(record, run_id)
                where = f"its record was saved to {saved}" if saved else "its record could not be saved anywhere"
                raise RunStoreError(f"{exc.strerror}; the run stopped after {cell.cell_id} ({record['status']}): "
                                    f"{where}. Free space or fix permissions, then resume with --resume") from exc
            marker.remove()
            summary.recorded(record["status"])
            if reporter:
                reporter.cell_finished(cell, record)
    finally:
        if reporter:
            reporter.finish(summary)
    _write_run_json(out_dir, run_id)
    return summary


def _both(first: Callable, second: Callable | None) -> Callable:
    return first if second is None else (lambda value: (first(value), second(value)))


def _merge_job_records(out_dir: Path, wanted: set[str]) -> None:
    """A run that other executors worked on: merge its jobs' records first; refuse while its jobs still run
    (this process cannot adopt them, and would run their cells a second time)."""
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
