"""`ctbench collect` (merge a run's job records, exactly once) and `ctbench status` (each cell's state)."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from rich.live import Live
from rich.table import Table

from suite.cli.common import UsageError, console, held_lock, out, styled
from suite.executors import ExecutorConfig
from suite.executors.reconcile import reconcile
from suite.executors.status import run_status

__all__ = ["register", "cmd_collect", "cmd_status"]


def cmd_collect(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    if not any((run_dir / name).exists() for name in ("records.jsonl", "cells", "jobs")):
        raise UsageError(f"{run_dir} is not a run directory (no records.jsonl, cells/ or jobs/): nothing to collect")
    with held_lock(run_dir, busy_hint="; a live coordinator merges records itself"):
        result = reconcile(run_dir, ExecutorConfig())
    counts = ", ".join(f"{v} {k}" for k, v in sorted(Counter(r["status"] for r in result.merged).items()))
    console.print(f"collect {run_dir}: merged {len(result.merged)} record(s) ({counts or 'nothing new'}); "
                  f"{len(result.failed)} of them recorded for jobs that ended without one; "
                  f"{len(result.in_flight)} cell(s) still queued or running")
    return 0


def _status_table(run_dir: Path) -> tuple[Table, dict[str, int]]:
    rows = run_status(run_dir)
    table = Table(title=f"status {run_dir}")
    for col in ("cell", "state", "job", "detail"):
        table.add_column(col)
    colours = {"ok": "green", "unsupported": "yellow"}
    totals: dict[str, int] = {}
    for row in rows:
        colour = colours.get(row.status, "red") if row.state == "done" else {"running": "cyan"}.get(row.state, "")
        table.add_row(row.cell_id, styled(colour, row.label), row.job, row.detail)
        totals[row.label] = totals.get(row.label, 0) + 1
    return table, totals


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if args.interval <= 0:
        raise UsageError(f"--interval must be a positive number of seconds, got {args.interval}")
    if not args.watch:
        table, totals = _status_table(run_dir)
        out.print(table)
        out.print(", ".join(f"{v} {k}" for k, v in sorted(totals.items())))
        return 0
    try:
        with Live(console=out, auto_refresh=False, transient=False) as live:
            while True:
                table, totals = _status_table(run_dir)
                summary = ", ".join(f"{v} {k}" for k, v in sorted(totals.items()))
                grid = Table.grid()
                grid.add_row(table)
                grid.add_row(summary)
                live.update(grid, refresh=True)
                if not any(k in totals for k in ("queued", "running", "unknown")):
                    return 0
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="merge the records of a run's jobs into records.jsonl (exactly once)")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_collect)
    p = sub.add_parser("status", help="each cell of a run: queued, running, done: status")
    p.add_argument("run_dir")
    p.add_argument("--watch", action="store_true", help="refresh until no cell is queued or running")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    p.set_defaults(func=cmd_status)
