"""The CLI's `RunReporter`: a progress bar over cells plus one log line per finished cell (readable in CI
logs too, where the bar is off)."""

from __future__ import annotations

from collections import Counter

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from suite.cli.common import console, styled
from suite.executors.status import describe_detail
from suite.spec import Cell

__all__ = ["Reporter"]


class Reporter:
    """Implements suite.executors.reporter.RunReporter on the stderr console."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False, disable=not console.is_terminal,  # CI logs get the lines only
        )
        self.bar = None
        self.n_done = 0
        self.cell_id: str | None = None

    def start(self, n: int, skipped: int, kept: Counter | None = None) -> None:
        if skipped:
            kept = kept or Counter()
            detail = ", ".join(f"{v} {k}" for k, v in sorted(kept.items())) or "recorded"
            hint = (" (--retry-failed re-runs the nonfinite/oom/timeout ones)"
                    if any(kept.get(s) for s in ("nonfinite", "oom", "timeout")) else "")
            console.print(f"resume: {skipped} cell(s) already recorded ({detail}) are kept; {n} to run{hint}")
        self.progress.start()
        self.bar = self.progress.add_task("cells", total=n)
        self.n_done = 0

    def cell_started(self, cell: Cell) -> None:
        self.cell_id = cell.cell_id
        self.progress.update(self.bar, description=cell.cell_id)

    def cell_progress(self, fraction: float) -> None:
        self.progress.update(self.bar, completed=self.n_done + min(max(fraction, 0.0), 1.0) * 0.99)

    def cell_detail(self, detail: dict) -> None:
        if self.cell_id is not None and detail.get("iterations"):
            self.progress.update(self.bar, description=f"{self.cell_id}  {describe_detail(detail)}")

    def note(self, text: str) -> None:
        self.progress.console.print(text)

    def cell_finished(self, cell: Cell, record: dict) -> None:
        self.n_done += 1
        self.progress.update(self.bar, completed=self.n_done)
        colour = {"ok": "green", "unsupported": "yellow"}.get(record["status"], "red")
        total = record["timing"].get("total_s")
        timing = f" {total:.2f}s" if isinstance(total, float) else ""
        reason = f" — {record['reason']}" if record["reason"] else ""
        self.progress.console.print(
            Text.assemble(styled(colour, f"{record['status']:>11}"), f" {cell.cell_id}{timing}{reason}")
        )

    def finish(self, summary: object) -> None:
        self.progress.stop()
