"""What every command shares: the two consoles, the usage error, run ids from directory names, the run lock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.text import Text

from suite.lock import RunLock, RunLocked
from suite.records import RecordsError, validate_run_id

__all__ = ["console", "out", "styled", "UsageError", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_BUG",
           "EXIT_INTERRUPTED", "run_id_for", "held_lock"]

# What an exit code means, one thing each (README: "Exit codes").
EXIT_OK = 0  # success
EXIT_FAILED = 1  # the command worked and found a failure: a regression, cells in error, an invalid spec
EXIT_USAGE = 2  # a user or environment error: bad input, a missing or damaged file, a refused submission
EXIT_BUG = 3  # an internal error of ctbench, and only that
EXIT_INTERRUPTED = 130  # Ctrl-C


def _consoles() -> tuple[Console, Console]:
    err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False, emoji=False)
    std = Console(soft_wrap=True, markup=False, highlight=False, emoji=False)
    if not std.is_terminal:  # logs and pipes: wide enough that tables are not squeezed into 80 columns
        std = Console(soft_wrap=True, width=220, markup=False, highlight=False, emoji=False)
    return err, std


console, out = _consoles()  # console: stderr (progress, notes, errors); out: stdout (tables, results)


def styled(style: str, text: str) -> Text:
    return Text(text, style=style)


class UsageError(ValueError):
    """Bad command-line input: printed as one clear message, exit code 2."""


def run_id_for(run_dir: Path, flag: str = "--out") -> str:
    """A run directory's id: its name (`--out .` names the current directory)."""
    resolved = run_dir.resolve()
    if resolved.is_file():  # a records.jsonl given directly
        resolved = resolved.parent
    try:
        return validate_run_id(resolved.name, where=f"{run_dir} gives run id")
    except RecordsError as exc:
        raise UsageError(f"{exc}; choose another {flag}") from None


@contextmanager
def held_lock(run_dir: Path, busy_hint: str = "") -> Iterator[RunLock]:
    """The run directory's lock for the length of a `with` block; a lock held by a live process, or one
    that cannot be written, is a usage error that names the holder."""
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except RunLocked as exc:
        raise UsageError(f"{exc}{busy_hint}") from None
    except OSError as exc:
        raise UsageError(f"cannot write the lock file in {run_dir}: {exc.strerror or exc}") from None
    try:
        if lock.took_over:
            console.print(f"note: took over the lock of a process that ended without releasing it "
                          f"(pid {lock.took_over.get('pid')} on {lock.took_over.get('host')})")
        yield lock
    finally:
        lock.release()
