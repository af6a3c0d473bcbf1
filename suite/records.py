"""The record schema and the JSONL store: one JSON object per cell, appended as soon as the cell ends.

Appends are one `os.write` of a whole line to an O_APPEND file, then fsync; a failed write is truncated
back, so the file only ever ends in a complete record or in what a killed process left mid-line.

One rule for a damaged end of the file, for readers and writers alike: the *last* line, when it is not a
decodable JSON line (cut off by a kill, or garbled), is the "corrupt tail". Readers skip it with a warning;
a writer (`--resume`) moves it aside into `records.jsonl.corrupt` before appending, so a new record is
never built on it. A bad line anywhere else is an error that names its line number.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA", "Status", "RecordStore", "RecordsError", "RecordsWriteError", "read_records", "FAILED_STATUSES",
    "REQUIRED_KEYS", "validate_run_id", "RUN_ID_PATTERN", "latest_by_cell", "CorruptTail", "device_classes",
    "json_safe", "record_problem",
]

# 2: records carry `inputs` (what --resume compares: data set and its fingerprint, device class, torch
# build) and `spec` (the spec file and its hash).
SCHEMA = 2
REQUIRED_KEYS = (
    "schema", "run_id", "cell_id", "task", "variant", "backend", "method", "steps", "precision", "scaling",
    "seed", "profile", "device", "status", "reason", "metrics", "timing", "memory", "env", "spec_hash",
    "inputs",
)
# One path component, no leading dot: a run id names directories (results/<id>, reports/<id>).
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


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


class RecordsWriteError(OSError):
    """A record could not be written (read-only or full folder); the message says where it went instead."""


def validate_run_id(run_id: object, where: str = "run id") -> str:
    """A run id is one safe path component; anything else (absolute paths, '..', '/') is refused."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
        raise RecordsError(
            f"{where} {run_id!r} is not a valid run id: it must be one path component of letters, digits, "
            "'.', '_', '+' or '-', starting with a letter or digit (at most 128 characters)"
        )
    return run_id


def json_safe(value: Any) -> Any:
    """JSON has no inf/NaN: store them as strings so the file stays standard JSON, and say so."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'inf', '-inf', 'nan'
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# ---------------------------------------------------------------- scanning (shared by reader and writer)
@dataclass(frozen=True)
class CorruptTail:
    """The damaged last line: where it starts, its bytes, and why it is not a record."""

    offset: int
    data: bytes
    why: str


def _decode(line: bytes) -> tuple[Any, str | None]:
    try:
        return json.loads(line.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg}, column {exc.colno})"


def _scan(data: bytes) -> tuple[list[tuple[int, Any]], CorruptTail | None, list[tuple[int, str]]]:
    """Split a records file into (line number, parsed JSON) pairs, the corrupt tail (if any), and the
    undecodable lines elsewhere (line number, why)."""
    lines = data.split(b"\n")
    terminated = lines[-1] == b""
    if terminated:
        lines = lines[:-1]
    parsed, bad = [], []
    last = max((k for k, line in enumerate(lines) if line.strip()), default=-1)
    offset = 0
    tail = None
    for k, line in enumerate(lines):
        start = offset
        offset += len(line) + 1
        if not line.strip():
            continue
        value, why = _decode(line)
        if why is None:
            parsed.append((k + 1, value))
        elif k == last:
            cut = "" if terminated or k < len(lines) - 1 else "cut off, "
            tail = CorruptTail(start, data[start:], f"{cut}{why}")
        else:
            bad.append((k + 1, why))
    return parsed, tail, bad


# ---------------------------------------------------------------- record checks
_TYPES: dict[str, tuple[type, ...]] = {
    "schema": (int,), "run_id": (str,), "cell_id": (str,), "task": (str,), "variant": (str,), "backend": (str,),
    "method": (str,), "steps": (int,), "precision": (str,), "scaling": (str,), "seed": (int,), "profile": (str,),
    "device": (str,), "status": (str,), "reason": (str,), "metrics": (dict,), "timing": (dict,), "memory": (dict,),
    "env": (dict,), "spec_hash": (str,), "inputs": (dict,), "stats": (dict,), "extra": (dict,),
    "artifacts": (dict,), "params": (dict,), "traceback": (str, type(None)), "spec": (dict,),
    "started_at": (str,), "record_id": (str,), "executor": (dict,), "memory_setting": (str,),
}
_TYPE_NAMES = {int: "an integer", str: "a string", dict: "an object", type(None): "null"}
_NONFINITE_STRINGS = {"inf", "-inf", "nan"}


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or value in _NONFINITE_STRINGS


def record_problem(record: Any) -> str | None:
    """Why a parsed line is not a ctbench record of this schema (None when it is)."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    schema = record.get("schema")
    if schema != SCHEMA:
        return (f"record schema {schema!r} is not supported (this ctbench reads schema {SCHEMA}; "
                "records of another schema come from another ctbench version: re-run into a new --out)")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        return f"record lacks required keys: {', '.join(missing)}"
    for key, types in _TYPES.items():
        if key in record and (not isinstance(record[key], types) or isinstance(record[key], bool)):
            wanted = " or ".join(_TYPE_NAMES[t] for t in types)
            return f"key {key!r} should be {wanted}, got {type(record[key]).__name__} {record[key]!r:.60}"
    for group in ("metrics", "timing"):
        for name, value in record[group].items():
            if not _is_number(value):
                return f"{group}.{name} should be a number (or 'inf'/'-inf'/'nan'), got {value!r:.60}"
    if record["status"] not in {s.value for s in Status}:
        return f"unknown status {record['status']!r}; allowed: {', '.join(s.value for s in Status)}"
    try:
        validate_run_id(record["run_id"])
    except RecordsError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------- store
class RecordStore:
    """Append-only `records.jsonl` in a run directory."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def corrupt_path(self) -> Path:
        return self.path.with_name(self.path.name + ".corrupt")

    def prepare_for_append(self) -> CorruptTail | None:
        """Move a corrupt tail aside (appended to records.jsonl.corrupt) so new records never follow it.

        Returns what was moved (None when the file ends cleanly); a warning says so too.
        """
        if not self.path.exists():
            return None
        data = self.path.read_bytes()
        _, tail, _ = _scan(data)
        if tail is None:
            if data and not data.endswith(b"\n"):  # a complete JSON line without its newline
                with open(self.path, "ab") as fh:
                    fh.write(b"\n")
            return None
        with open(self.corrupt_path, "ab") as fh:
            fh.write(tail.data if tail.data.endswith(b"\n") else tail.data + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        with open(self.path, "r+b") as fh:
            fh.truncate(tail.offset)
            fh.flush()
            os.fsync(fh.fileno())
        warnings.warn(
            f"{self.path}: the last line ({len(tail.data)} bytes, {tail.why}) is not a complete record; "
            f"moved it to {self.corrupt_path} (a cell interrupted while its record was written runs again)",
            stacklevel=2,
        )
        return tail

    def append(self, record: dict) -> None:
        """Write one record as one line; on failure leave the file as it was and raise RecordsWriteError."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(json_safe(record), sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(28, f"short write ({written} of {len(line)} bytes)")
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, size)  # no half record left behind
                except OSError:
                    pass
                raise RecordsWriteError(exc.errno, f"cannot write a record to {self.path}: "
                                        f"{exc.strerror or exc}") from exc
        finally:
            os.close(fd)

    def read(self) -> list[dict]:
        return read_records(self.path)


def read_records(path: Path | str) -> list[dict]:
    """Read a records file (or a run directory holding records.jsonl); skip a corrupt tail with a warning."""
    path = Path(path)
    if path.is_dir():
        path = path / "records.jsonl"
    if not path.exists():
        raise RecordsError(f"{path}: no records file (expected a run directory with records.jsonl)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecordsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    parsed, tail, bad = _scan(data)
    problems = [(number, f"{why}; only the last line may be damaged (an interrupted write): fix or delete "
                 "this one") for number, why in bad]
    records = []
    for number, record in parsed:
        problem = record_problem(record)
        if problem:
            problems.append((number, problem))
        elif not problems:
            records.append(record)
    if problems:
        number, problem = min(problems)
        raise RecordsError(f"{path}:{number}: {problem}")
    if tail is not None:
        warnings.warn(f"{path}: skipping the last line ({tail.why}): an interrupted write; "
                      "`ctbench run --resume` moves it to records.jsonl.corrupt", stacklevel=2)
    return records


def latest_by_cell(records: list[dict]) -> dict[str, dict]:
    """cell_id → its latest record (a resumed re-run supersedes the earlier one)."""
    latest: dict[str, dict] = {}
    for record in records:
        latest[record["cell_id"]] = record
    return latest


def device_classes(records: Iterable[dict]) -> set[str]:
    """The device classes ("cpu: AMD EPYC", "cuda: NVIDIA H100 ...") the records were measured on."""
    return {(r.get("inputs") or {}).get("device_class", "?") for r in records}
