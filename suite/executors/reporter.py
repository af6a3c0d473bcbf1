"""What an executor tells whoever watches a run (the CLI's progress bar; tests' recorders): a Protocol, so
an executor needs no CLI and a caller may pass any object with these methods."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from suite.spec import Cell

__all__ = ["RunReporter"]


@runtime_checkable
class RunReporter(Protocol):
    def start(self, n: int, skipped: int, kept: Counter | None = None) -> None:
        """`n` cells are about to run; `skipped` earlier records are kept (`kept`: by status)."""

    def cell_started(self, cell: Cell) -> None: ...

    def cell_progress(self, fraction: float) -> None:
        """How far the running cell is, 0..1 (in-process cells only)."""

    def cell_detail(self, detail: dict) -> None:
        """Where the running cell's training is: iteration, iterations, validation (in-process cells only;
        optional: an executor calls it only on a reporter that has it)."""

    def note(self, text: str) -> None:
        """A line for the user that is not a cell's outcome (an adopted job, a retry)."""

    def cell_finished(self, cell: Cell, record: dict) -> None: ...

    def finish(self, summary: object) -> None:
        """The run ended (or stopped): `summary` is the executor's RunSummary (the counts so far)."""
