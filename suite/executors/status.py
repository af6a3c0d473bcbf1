"""`ctbench status RUN`: each cell of a run (queued, running, done: status), read-only, for any executor.

What it reads: records.jsonl (merged), cells/*.record.json (finished, not merged yet), cells/*.running.json
(the worker's progress) and jobs/manifest.jsonl with the job engine's view (a live pid here, sacct on SLURM).
It never writes, so it is safe next to a live coordinator.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from suite.executors.config import ExecutorConfig
from suite.executors.exchange import Manifest, pending_records, read_marker, read_plan, running_marker, this_host
from suite.executors.jobs import jobs_for
from suite.lock import pid_alive
from suite.records import RecordsError, latest_by_cell, read_records

__all__ = ["CellStatus", "run_status", "describe_detail"]


@dataclass
class CellStatus:
    cell_id: str
    state: str  # queued | running | done | ended (no record yet: `ctbench collect` records why) | unknown
    status: str = ""  # the record's status when done
    job: str = ""
    detail: str = ""

    @property
    def label(self) -> str:
        return f"done: {self.status}" if self.state == "done" else self.state


def _age(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        started = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return ""
    seconds = int((_dt.datetime.now(_dt.UTC) - started).total_seconds())
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def run_status(out_dir: Path, config: ExecutorConfig | None = None) -> list[CellStatus]:
    """One line per cell the run knows of (recorded, waiting to be merged, or submitted)."""
    config = config or ExecutorConfig()
    if not out_dir.is_dir():
        raise RecordsError(f"{out_dir}: no such run directory")
    store = out_dir / "records.jsonl"
    records = read_records(store) if store.exists() else []
    merged = latest_by_cell(records)
    merged_ids = {r.get("record_id") for r in records}
    waiting = {r["cell_id"]: r for _, r in pending_records(out_dir, set_aside=False)}
    manifest = Manifest(out_dir).latest_by_cell()
    if not (records or waiting or manifest or read_plan(out_dir)):
        raise RecordsError(f"{out_dir}: not a ctbench run directory (no records.jsonl, no submitted jobs)")
    engines: dict[str, object] = {}
    for kind in {e["executor"] for e in manifest.values()}:
        engines[kind] = jobs_for(kind, out_dir, config)
        try:
            engines[kind].prefetch([e for e in manifest.values() if e["executor"] == kind
                                    and e["submission"] not in merged_ids])
        except Exception:  # noqa: BLE001, S110 — each row below says what could not be queried
            pass
    rows: dict[str, CellStatus] = {}
    for cell_id, record in merged.items():
        rows[cell_id] = CellStatus(cell_id, "done", record["status"], detail=record.get("reason", ""))
    for cell_id, entry in manifest.items():
        job = f"{entry['executor']}:{entry['job_id']}"
        if cell_id in waiting and waiting[cell_id].get("record_id") == entry["submission"]:
            r = waiting[cell_id]
            rows[cell_id] = CellStatus(cell_id, "done", r["status"], job, "finished; not merged yet "
                                       "(the coordinator or `ctbench collect` merges it)")
            continue
        if entry["submission"] in merged_ids:
            rows[cell_id].job = job
            continue
        if entry.get("cancelled"):
            rows.setdefault(cell_id, CellStatus(cell_id, "not started", job=job,
                                                detail="stopped by Ctrl-C: `--resume` runs it"))
            continue
        engine = engines[entry["executor"]]
        try:
            state = engine.state(entry)
        except Exception as exc:  # noqa: BLE001 — sacct missing or failing: say so, keep the other rows
            state, detail = "unknown", f"cannot query the job ({type(exc).__name__}: {exc})"
        else:
            detail = ""
        marker = read_marker(running_marker(out_dir, cell_id)) or {}
        if state == "running" or (state in ("elsewhere", "unknown") and marker):
            progress = marker.get("progress")
            detail = detail or ", ".join(filter(None, [
                describe_detail(marker.get("detail")),
                f"{100 * progress:.0f}%" if isinstance(progress, (int, float)) else "",
                f"for {_age(marker.get('started_at'))}" if marker.get("started_at") else "",
                f"attempt {marker['attempt']}" if marker.get("attempt", 1) > 1 else "",
                marker.get("state") if marker.get("state") not in (None, "running") else "",
            ]))
            rows[cell_id] = CellStatus(cell_id, "running" if state != "unknown" else "unknown", job=job, detail=detail)
        elif state == "queued":
            rows[cell_id] = CellStatus(cell_id, "queued", job=job,
                                       detail=f"submitted {_age(entry['submitted_at'])} ago")
        elif state == "ended":
            rows[cell_id] = CellStatus(cell_id, "ended", job=job,
                                       detail="the job ended without a merged record: `ctbench collect` records why")
        else:
            rows[cell_id] = CellStatus(cell_id, state, job=job, detail=detail)
    plan = read_plan(out_dir)
    if plan:
        alive = plan.get("host") == this_host() and _alive(plan.get("pid"))
        for cell_id in plan.get("cells", []):
            if cell_id in rows:
                continue
            marker = read_marker(running_marker(out_dir, cell_id)) or {}
            if alive and marker.get("pid") == plan.get("pid"):  # the in-process executor's current cell
                progress = marker.get("progress")
                rows[cell_id] = CellStatus(cell_id, "running", job=f"inprocess:{marker['pid']}",
                                           detail=", ".join(filter(None, [
                                               describe_detail(marker.get("detail")),
                                               f"{100 * progress:.0f}%" if isinstance(progress, (int, float))
                                               else "", f"for {_age(marker.get('started_at'))}"])))
            elif alive:
                rows[cell_id] = CellStatus(cell_id, "queued", detail="waiting for a free slot")
            else:
                rows[cell_id] = CellStatus(cell_id, "not started",
                                           detail="its coordinator is gone: `ctbench run ... --resume` runs it")
    return [rows[k] for k in sorted(rows)]


def describe_detail(detail: dict | None) -> str:
    """'iteration 120/400, validation 2.314' from a running marker's detail ('' when it has none)."""
    if not isinstance(detail, dict) or not detail.get("iterations"):
        return ""
    text = f"iteration {detail.get('iteration', 0)}/{detail['iterations']}"
    value = detail.get("validation")
    return text + (f", validation {value:.4g}" if isinstance(value, (int, float)) else "")


def _alive(pid) -> bool:
    return isinstance(pid, int) and pid_alive(pid)
