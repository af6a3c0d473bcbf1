"""How cells running in other processes hand their records to the run directory, exactly once.

Jobs never write `records.jsonl`. Each writes its record to its own file, atomically (write, fsync, rename):

    <run>/cells/<cell>.<submission>.record.json   a finished cell's record, waiting to be merged
    <run>/cells/<cell>.running.json               the cell's worker: pid, host, job id, progress
    <run>/jobs/manifest.jsonl                     one line per submission (the coordinator's)

`collect` (the coordinator, or `ctbench collect` after it is gone) appends every waiting record to
`records.jsonl` whose `record_id` (the submission id) is not there yet, then deletes the file: a crash between
the two leaves a file whose record is already merged, which the next collect only deletes. The caller holds
the run directory's lock.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import socket
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from suite.records import RecordStore, json_safe, read_records, record_problem

__all__ = ["cell_file_stem", "RunningMarker", "save_unsaved", "write_json_atomic", "write_cell_record",
           "pending_records", "collect", "CollectResult", "Manifest", "running_marker", "read_marker", "now_iso",
           "write_plan", "read_plan", "this_host"]

CELLS = "cells"
JOBS = "jobs"


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def cell_file_stem(cell_id: str) -> str:
    """A file-name-safe, collision-free name for a cell id."""
    readable = re.sub(r"[^A-Za-z0-9_.=-]+", "_", cell_id)[:150]
    return f"{readable}-{hashlib.sha256(cell_id.encode()).hexdigest()[:8]}"


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(json_safe(obj), sort_keys=True, allow_nan=False).encode()
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_cell_record(out_dir: Path, record: dict) -> Path:
    path = out_dir / CELLS / f"{cell_file_stem(record['cell_id'])}.{record['record_id']}.record.json"
    write_json_atomic(path, record)
    return path


def save_unsaved(record: dict, run_id: str) -> Path | None:
    """Last resort when the run directory cannot be written: keep the computed record in the temp folder
    (`$TMPDIR/ctbench-unsaved-<run id>.jsonl`); None when even that fails."""
    path = Path(tempfile.gettempdir()) / f"ctbench-unsaved-{run_id}.jsonl"
    try:
        RecordStore(path).append(record)
        return path
    except OSError:
        return None


def running_marker(out_dir: Path, cell_id: str) -> Path:
    return out_dir / CELLS / f"{cell_file_stem(cell_id)}.running.json"


def read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pending_records(out_dir: Path, set_aside: bool = True) -> list[tuple[Path, dict]]:
    """Records written by jobs and not merged yet (oldest first). A damaged file is set aside with a warning
    (`set_aside=False`, for readers that never write: skipped)."""
    found = []
    candidates = []
    for path in (out_dir / CELLS).glob("*.record.json"):
        try:
            candidates.append((path.stat().st_mtime, path))
        except OSError as exc:  # a dangling symlink, a file removed meanwhile: not a record
            warnings.warn(f"{path}: cannot be read ({exc.strerror or exc}); skipped", stacklevel=2)
    for _, path in sorted(candidates):
        try:
            record = json.loads(path.read_text())
            problem = record_problem(record) or (None if isinstance(record.get("record_id"), str)
                                                  else "no record_id")
        except (OSError, ValueError) as exc:
            problem = str(exc)
        if problem and not set_aside:
            continue
        if problem:
            bad = path.with_suffix(".bad")
            os.replace(path, bad)
            warnings.warn(f"{path}: not a cell record ({problem}); moved to {bad.name}", stacklevel=2)
            continue
        found.append((path, record))
    return found


class RunningMarker:
    """A cell's `running` file: who runs it, since when, how far and where its training is (iteration, last
    validation number), for `ctbench status`; rewritten at most every 2 s."""

    def __init__(self, path: Path, base: dict) -> None:
        self.path, self.base = path, base
        self.last, self.fraction = 0.0, 0.0
        self.info: dict = {}
        self.lock = threading.Lock()
        self.write(0.0, force=True)

    def progress(self, fraction: float) -> None:
        self.write(fraction)

    def detail(self, info: dict) -> None:
        self.info.update(info)
        self.write(self.fraction)

    def write(self, fraction: float, force: bool = False, **extra) -> None:
        self.fraction = float(fraction)
        now = time.monotonic()
        if not force and now - self.last < 2.0:
            return
        self.last = now
        with self.lock:
            write_json_atomic(self.path, {**self.base, "progress": round(self.fraction, 4), "updated_at": now_iso(),
                                          **({"detail": self.info} if self.info else {}), **extra})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class CollectResult:
    merged: list[dict] = field(default_factory=list)  # newly appended to records.jsonl
    duplicates: int = 0  # waiting files whose record was already merged (an interrupted earlier collect)


def collect(out_dir: Path) -> CollectResult:
    """Merge waiting cell records into records.jsonl, each exactly once (idempotent)."""
    result = CollectResult()
    waiting = pending_records(out_dir)
    if not waiting:
        return result
    store = RecordStore(out_dir / "records.jsonl")
    if store.path.exists():
        store.prepare_for_append()
        merged = {r.get("record_id"): r["status"] for r in read_records(store.path)}
    else:
        merged = {}
    for path, record in waiting:
        earlier = merged.get(record["record_id"])
        # The worker's own `ok` outranks a failure recorded for its job while it was thought dead: appended,
        # it is the cell's latest record. Anything else already merged under this id is a duplicate.
        if earlier is not None and not (record["status"] == "ok" and earlier != "ok"):
            result.duplicates += 1
        else:
            store.append(record)
            merged[record["record_id"]] = record["status"]
            result.merged.append(record)
        path.unlink()
    return result


_ENTRY_KEYS = ("cell_id", "submission", "executor", "job_id")  # what reconcile and status read


class Manifest:
    """Append-only list of submissions: which cell went to which job (status and collect read it)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / JOBS / "manifest.jsonl"

    def append(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(json_safe(entry), sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut off by a kill: that submission's job is found by its record or not at all
            if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in _ENTRY_KEYS):
                warnings.warn(f"{self.path}:{number}: not a submission entry (needs {', '.join(_ENTRY_KEYS)}); "
                              "skipped", stacklevel=2)
                continue
            out.append(entry)
        return out

    def latest_by_cell(self) -> dict[str, dict]:
        latest: dict[str, dict] = {}
        for entry in self.entries():
            latest[entry["cell_id"]] = entry
        return latest


def this_host() -> str:
    return socket.gethostname()


def write_plan(out_dir: Path, run_id: str, executor: str, cell_ids: list[str]) -> None:
    """The cells a coordinator is about to run (status shows those not submitted yet as queued)."""
    write_json_atomic(out_dir / JOBS / "plan.json", {"run_id": run_id, "executor": executor, "cells": cell_ids,
                                                     "pid": os.getpid(), "host": this_host(), "started_at": now_iso()})


def read_plan(out_dir: Path) -> dict | None:
    return read_marker(out_dir / JOBS / "plan.json")
