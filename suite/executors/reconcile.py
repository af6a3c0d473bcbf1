"""What a run directory says about earlier submissions: merge the records waiting in `cells/`, record the jobs
that ended without one, and list those still queued or running (so they are adopted, never run twice).

Used by the coordinator before it submits, by `ctbench collect`, and by the in-process executor before it
resumes a directory that other executors worked on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.cell import failure_outcome, make_record
from suite.executors.config import ExecutorConfig
from suite.executors.exchange import Manifest, collect, running_marker, write_cell_record
from suite.executors.jobs import JobEnded, jobs_for
from suite.records import read_records

__all__ = ["reconcile", "ReconcileResult", "record_job_failure"]


@dataclass
class ReconcileResult:
    """What the run directory says about submissions made before (by this or a dead coordinator)."""

    merged: list[dict] = field(default_factory=list)
    in_flight: dict[str, dict] = field(default_factory=dict)  # cell id → manifest entry of a live job
    failed: list[dict] = field(default_factory=list)  # records written now for jobs that ended without one


def reconcile(out_dir: Path, config: ExecutorConfig, live: set[str] = frozenset()) -> ReconcileResult:
    """Merge waiting records; record jobs that ended without a record; list jobs still queued or running.

    `live`: submission ids this process is watching itself (not judged here). The caller holds the lock.
    """
    result = ReconcileResult(merged=collect(out_dir).merged)
    store = out_dir / "records.jsonl"
    recorded = {r.get("record_id") for r in read_records(store)} if store.exists() else set()
    open_entries = [e for e in Manifest(out_dir).latest_by_cell().values()
                    if e["submission"] not in recorded and e["submission"] not in live and not e.get("cancelled")]
    engines: dict[str, Any] = {}
    for kind in {e["executor"] for e in open_entries}:
        engines[kind] = jobs_for(kind, out_dir, config)
        engines[kind].prefetch([e for e in open_entries if e["executor"] == kind])
    for entry in open_entries:
        engine = engines[entry["executor"]]
        state = engine.state(entry)
        if state != "ended":
            result.in_flight[entry["cell_id"]] = entry
            continue
        if next((out_dir / "cells").glob(f"*.{entry['submission']}.record.json"), None) is not None:
            continue  # written just before its job ended (after our collect): the next collect merges it
        result.failed.append(record_job_failure(out_dir, entry, engine.ended(entry)))
    result.merged += collect(out_dir).merged
    return result


def record_job_failure(out_dir: Path, entry: dict, ended: JobEnded) -> dict:
    """The record of a job that ended without writing one (killed, crashed, timed out), from its manifest entry."""
    outcome = failure_outcome(ended.status, ended.reason, ended.detail)
    executor = {**entry["executor_info"], "job_id": entry["job_id"]}
    record = make_record(entry["header"], entry["submitted_at"], outcome, record_id=entry["submission"],
                         executor=executor)
    write_cell_record(out_dir, record)
    running_marker(out_dir, entry["cell_id"]).unlink(missing_ok=True)
    return record
