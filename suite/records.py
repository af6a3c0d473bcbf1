"""The record schema and the JSONL store: one JSON object per cell, appended as soon as the cell ends.

Appends are flushed and fsync'ed, so a killed run loses only the cell in flight. The reader skips a
truncated last line (with a warning) and refuses a corrupt line elsewhere, naming its line number.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "Status", "RecordStore", "RecordsError", "read_records", "FAILED_STATUSES", "REQUIRED_KEYS"]

SCHEMA = 1
REQUIRED_KEYS = (
    "schema", "run_id", "cell_id", "task", "variant", "backend", "method", "steps", "precision", "scaling",
    "seed", "profile", "device", "status", "reason", "metrics", "timing", "memory", "env", "spec_hash",
)


class Status(StrEnum):
    OK = "ok"
    NONFINITE = "nonfinite"
    ERROR = "error"
    OOM = "oom"
    UNSUPPORTED = "unsupported"
    TIMEOUT = "timeout"


FAILED_STATUSES = frozenset({Status.NONFINITE, Status.ERROR, Status.OOM, Status.TIMEOUT})


class RecordsError(ValueError):
    """A records file that cannot be read as ctbench records."""


def _json_safe(value: Any) -> Any:
    """JSON has no inf/NaN: store them as strings so the file stays standard JSON, and say so."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'inf', '-inf', 'nan'
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class RecordStore:
    """Append-only `records.jsonl` in a run directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def prepare_for_append(self) -> None:
        """Drop a truncated last line (a cell killed mid-write) so new records start on a clean line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            warnings.warn(
                f"{self.path}: dropping a truncated last line ({len(data) - keep} bytes) left by an interrupted run",
                stacklevel=2,
            )
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(_json_safe(record), sort_keys=True, allow_nan=False)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> list[dict]:
        return read_records(self.path)


def read_records(path: Path | str) -> list[dict]:
    """Read a records file (or a run directory holding records.jsonl)."""
    path = Path(path)
    if path.is_dir():
        path = path / "records.jsonl"
    if not path.exists():
        raise RecordsError(f"{path}: no records file (expected a run directory with records.jsonl)")
    lines = path.read_text(encoding="utf-8").split("\n")
    complete_last = lines[-1] == ""
    if complete_last:
        lines = lines[:-1]
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                warnings.warn(f"{path}:{number}: skipping a truncated last line ({exc.msg})", stacklevel=2)
                continue
            raise RecordsError(f"{path}:{number}: not a JSON record ({exc.msg}); fix or delete that line") from None
        if not isinstance(record, dict):
            raise RecordsError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        schema = record.get("schema")
        if schema != SCHEMA:
            raise RecordsError(
                f"{path}:{number}: record schema {schema!r} is not supported (this ctbench reads schema {SCHEMA})"
            )
        missing = [k for k in REQUIRED_KEYS if k not in record]
        if missing:
            raise RecordsError(f"{path}:{number}: record lacks required keys: {', '.join(missing)}")
        if record["status"] not in {s.value for s in Status}:
            raise RecordsError(
                f"{path}:{number}: unknown status {record['status']!r}; allowed: {', '.join(s.value for s in Status)}"
            )
        records.append(record)
    return records
