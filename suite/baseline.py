"""Baselines: committed, measured runs that `ctbench gate` compares with; reading, writing, naming.

A baseline folder holds records.jsonl (the latest record per cell of a real run of committed code),
baseline.json (its provenance) and a README saying how it was made and how to remake it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path

from suite.records import SCHEMA, RecordsError, RecordStore, device_classes, latest_by_cell, read_records

__all__ = ["BaselineError", "load_baseline", "write_baseline", "baseline_name"]


class BaselineError(ValueError):
    """A baseline folder that cannot be used (missing, another schema, or not a measured run of committed code)."""


def load_baseline(folder: Path) -> tuple[list[dict], dict]:
    """(records, provenance) of a baseline folder; BaselineError when it is missing or of another schema."""
    meta_path, records_path = folder / "baseline.json", folder / "records.jsonl"
    if not records_path.exists() or not meta_path.exists():
        raise BaselineError(f"{folder}: no baseline here (records.jsonl and baseline.json); make one with "
                            f"`ctbench gate RUN --baseline {folder} --update` on a run of committed code")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BaselineError(f"{meta_path}: not readable JSON ({exc})") from None
    if meta.get("schema") != SCHEMA:
        raise BaselineError(f"{meta_path}: baseline of records schema {meta.get('schema')!r}; this ctbench reads "
                            f"schema {SCHEMA}: remake the baseline with this version")
    try:
        return read_records(records_path), meta
    except RecordsError as exc:
        raise BaselineError(f"baseline {folder}: {exc}") from None


def write_baseline(folder: Path, records: list[dict], tasks: list[str] | None, command: str) -> dict:
    """Write (or, for `tasks`, update) a baseline from a run: only a measured run of committed code."""
    chosen = [r for r in latest_by_cell(records).values() if not tasks or r["task"] in tasks]
    if not chosen:
        raise BaselineError("the run has no records of the chosen tasks")
    dirty = sorted({r["env"].get("git_sha") or "unknown" for r in chosen if r["env"].get("dirty") is not False})
    if dirty:
        raise BaselineError("a baseline is a measured run of committed code; these records come from a dirty or "
                            f"unknown checkout ({', '.join(dirty)}): commit, run again, then --update")
    kept: list[dict] = []
    if (folder / "records.jsonl").exists() and tasks:
        kept = [r for r in load_baseline(folder)[0] if r["task"] not in tasks]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".records.jsonl.tmp"
    tmp.unlink(missing_ok=True)
    store = RecordStore(tmp)
    for record in kept + chosen:
        store.append(record)
    os.replace(tmp, folder / "records.jsonl")
    env = chosen[0]["env"]
    every = kept + chosen  # provenance of the whole baseline, the tasks kept from earlier runs included
    meta = {
        "schema": SCHEMA, "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "run_ids": sorted({r["run_id"] for r in every}), "git_sha": sorted({r["env"]["git_sha"] for r in every}),
        "device_class": sorted(device_classes(every)), "torch": env.get("torch"), "python": env.get("python"),
        "backend_versions": env.get("backend_versions"), "profile": sorted({r["profile"] for r in every}),
        "tasks": sorted({r["task"] for r in kept + chosen}), "cells": len(kept) + len(chosen), "command": command,
    }
    (folder / "baseline.json").write_text(json.dumps(meta, indent=2) + "\n")
    _write_readme(folder, meta)
    return meta


def _write_readme(folder: Path, meta: dict) -> None:
    text = f"""# Baseline `{folder.name}`

Measured, never hand-edited: records of a real `ctbench run` of committed code, written by

    {meta['command']}

- git commit(s): {', '.join(meta['git_sha'])} (a `--task` update keeps the other tasks' records and commits)
- device class: {', '.join(meta['device_class'])}; torch {meta['torch']}; Python {meta['python']}
- profile: {', '.join(meta['profile'])}; tasks: {', '.join(meta['tasks'])} ({meta['cells']} cells)
- made: {meta['created']}

To remake it: run the same profile on committed code into a fresh directory, check the run with
`ctbench gate RUN --baseline {folder}`, then add `--update` (only the tasks given with `--task` are replaced).
"""
    (folder / "README.md").write_text(text)


def baseline_name(device_name: str | None = None) -> str:
    """The baseline folder of this machine's first GPU for the gate profile: 'h100-gate' for an H100."""
    if device_name is None:
        import torch

        device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    words = [w for w in re.split(r"[^a-z0-9]+", device_name.lower()) if w and w not in ("nvidia", "tesla", "geforce")]
    if len(words) > 1 and words[0] in ("rtx", "quadro", "titan"):
        words = [words[0] + words[1]]
    return f"{words[0] if words else 'unknown'}-gate"
