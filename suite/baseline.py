"""Baselines: committed, measured runs that `ctbench gate` compares with; reading, writing, naming.

A baseline folder holds records.jsonl (the latest record per cell of a real run of committed code),
baseline.json (its provenance, and a hash of every line of records.jsonl) and a README saying how it was made
and how to remake it. Both files are written atomically; a baseline whose records do not match their hashes
(a torn line from a partial copy, a missing line, a hand edit) is refused, naming the file and the line.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import subprocess
import warnings
from pathlib import Path

from suite.records import SCHEMA, RecordsError, RecordStore, device_classes, latest_by_cell, read_records

__all__ = ["BaselineError", "load_baseline", "write_baseline", "baseline_name", "uncommitted_specs"]


class BaselineError(ValueError):
    """A baseline folder that cannot be used (missing, another schema, or not a measured run of committed code)."""


def _line_hashes(data: bytes) -> list[str]:
    return [hashlib.sha256(line).hexdigest()[:16] for line in data.splitlines()]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _verify(records_path: Path, meta: dict, meta_path: Path) -> None:
    """records.jsonl line by line against the hashes baseline.json keeps: the first line that differs is named."""
    expected = meta.get("line_sha256")
    if not isinstance(expected, list):
        raise BaselineError(f"{meta_path}: no line hashes (made by an older ctbench), so damage to "
                            f"{records_path} could not be seen: remake the baseline with `ctbench gate RUN "
                            f"--baseline {records_path.parent} --update`")
    try:
        actual = _line_hashes(records_path.read_bytes())
    except OSError as exc:
        raise BaselineError(f"{records_path}: cannot read ({exc.strerror or exc})") from None
    for number, (want, got) in enumerate(zip(expected, actual), start=1):
        if want != got:
            raise BaselineError(f"{records_path}:{number}: this line is not the one the baseline was written with "
                                "(edited, or cut off by a partial copy); restore the file from git or remake the "
                                "baseline with --update")
    if len(actual) != len(expected):
        what = "missing" if len(actual) < len(expected) else "added"
        raise BaselineError(f"{records_path}:{min(len(actual), len(expected)) + 1}: {abs(len(actual) - len(expected))} "
                            f"line(s) {what} since the baseline was written ({len(expected)} expected); restore the "
                            "file from git or remake the baseline with --update")


def load_baseline(folder: Path) -> tuple[list[dict], dict]:
    """(records, provenance) of a baseline folder; BaselineError when it is missing, damaged or of another
    schema."""
    meta_path, records_path = folder / "baseline.json", folder / "records.jsonl"
    if not records_path.exists() or not meta_path.exists():
        raise BaselineError(f"{folder}: no baseline here (records.jsonl and baseline.json); make one with "
                            f"`ctbench gate RUN --baseline {folder} --update` on a run of committed code")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BaselineError(f"{meta_path}: not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        found = meta.get("schema") if isinstance(meta, dict) else None
        raise BaselineError(f"{meta_path}: baseline of records schema {found!r}; this ctbench reads "
                            f"schema {SCHEMA}: remake the baseline with this version")
    _verify(records_path, meta, meta_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a skipped line would make a baseline cell look new: never
            return read_records(records_path), meta
    except (RecordsError, UserWarning) as exc:
        raise BaselineError(f"baseline {folder}: {exc}") from None


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None


def uncommitted_specs(records: list[dict]) -> list[str]:
    """Why the specs the records ran are not files of a ctbench checkout as committed at the records' commit
    (empty when every one is): a baseline must come from specs a later checkout can read again."""
    problems = []
    for path, sha256, commit in sorted({((r.get("spec") or {}).get("path") or "", (r.get("spec") or {}).get("sha256"),
                                         r["env"].get("git_sha")) for r in records}, key=str):
        folder = Path(path).resolve().parent
        top = _git(["rev-parse", "--show-toplevel"], folder) if path and folder.is_dir() else None
        if top is None or top.returncode != 0:
            problems.append(f"{path or '(no spec path)'} is not in a git checkout")
            continue
        repository = Path(top.stdout.decode().strip())
        try:
            relative = Path(path).resolve().relative_to(repository.resolve()).as_posix()
        except ValueError:  # git's top level and the resolved path disagree (a bind mount, an odd symlink)
            problems.append(f"{path} cannot be placed inside its checkout {repository}")
            continue
        shown = _git(["show", f"{commit}:{relative}"], repository) if commit else None
        if shown is None or shown.returncode != 0:
            problems.append(f"{path} is not committed at {commit or 'an unknown commit'} in {repository}")
        elif hashlib.sha256(shown.stdout).hexdigest() != sha256:
            problems.append(f"{path}: the run read other contents than commit {commit[:12]} holds")
    return problems


def write_baseline(folder: Path, records: list[dict], tasks: list[str] | None, command: str,
                   force: bool = False) -> dict:
    """Write (or, for `tasks`, update) a baseline from a run: only a measured run of committed code and
    committed specs (`force`: specs from elsewhere too)."""
    chosen = [r for r in latest_by_cell(records).values() if not tasks or r["task"] in tasks]
    if not chosen:
        raise BaselineError("the run has no records of the chosen tasks")
    dirty = sorted({r["env"].get("git_sha") or "unknown" for r in chosen if r["env"].get("dirty") is not False})
    if dirty:
        raise BaselineError("a baseline is a measured run of committed code; these records come from a dirty or "
                            f"unknown checkout ({', '.join(dirty)}): commit, run again, then --update")
    problems = [] if force else uncommitted_specs(chosen)
    if problems:
        raise BaselineError("a baseline is made from committed specs, so that it can be remade: "
                            f"{'; '.join(problems)} (--force writes it anyway)")
    kept: list[dict] = []
    if (folder / "records.jsonl").exists() and tasks:
        kept = [r for r in load_baseline(folder)[0] if r["task"] not in tasks]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".records.jsonl.tmp"
    tmp.unlink(missing_ok=True)
    store = RecordStore(tmp)
    for record in kept + chosen:
        store.append(record)
    hashes = _line_hashes(tmp.read_bytes())
    os.replace(tmp, folder / "records.jsonl")
    env = chosen[0]["env"]
    every = kept + chosen  # provenance of the whole baseline, the tasks kept from earlier runs included
    meta = {
        "schema": SCHEMA, "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "run_ids": sorted({r["run_id"] for r in every}), "git_sha": sorted({r["env"]["git_sha"] for r in every}),
        "device_class": sorted(device_classes(every)), "torch": env.get("torch"), "python": env.get("python"),
        "backend_versions": env.get("backend_versions"), "profile": sorted({r["profile"] for r in every}),
        "tasks": sorted({r["task"] for r in kept + chosen}), "cells": len(kept) + len(chosen), "command": command,
        "line_sha256": hashes,
    }
    _write_atomic(folder / "baseline.json", json.dumps(meta, indent=2) + "\n")
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
    _write_atomic(folder / "README.md", text)


def baseline_name(device_name: str | None = None) -> str:
    """The baseline folder of this machine's first GPU for the gate profile: 'h100-gate' for an H100."""
    if device_name is None:
        import torch

        device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    words = [w for w in re.split(r"[^a-z0-9]+", device_name.lower()) if w and w not in ("nvidia", "tesla", "geforce")]
    if len(words) > 1 and words[0] in ("rtx", "quadro", "titan"):
        words = [words[0] + words[1]]
    return f"{words[0] if words else 'unknown'}-gate"
