"""`ctbench validate | list | run | report`: one command from spec to report."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from suite.backends import BACKENDS
from suite.precision import PRECISIONS
from suite.records import RecordsError, read_records
from suite.registry import UnknownNameError
from suite.scaling import SCALINGS
from suite.spec import Cell, SpecError, expand, load_spec, spec_files
from suite.tasks import TASKS

__all__ = ["main"]

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
if not out.is_terminal:  # logs and pipes: wide enough that tables are not squeezed into 80 columns
    out = Console(soft_wrap=True, width=220)


class UsageError(ValueError):
    """Bad command-line input: printed as one clear message, exit code 2."""


# ---------------------------------------------------------------- validate / list
def cmd_validate(args) -> int:
    paths = [Path(p) for p in args.files] or spec_files()
    failed = 0
    for path in paths:
        try:
            spec = load_spec(path)
            n = {p: len(expand(spec, p)) for p in spec.file.profiles}
            out.print(f"[green]ok[/green] {path} (task {spec.task}; cells per profile: {n})")
        except SpecError as exc:
            failed += 1
            out.print(f"[red]invalid[/red] {path}")
            for loc, msg in exc.problems:
                out.print(f"  {path}: {loc or '<top level>'}: {msg}", markup=False, highlight=False)
    return 1 if failed else 0


def cmd_list(args) -> int:
    table = Table(title="tasks")
    for col in ("task", "metrics", "spec profiles", "summary"):
        table.add_column(col)
    specs = {}
    for path in spec_files():
        try:
            spec = load_spec(path)
            specs[spec.task] = spec
        except SpecError:
            pass
    for name, task in TASKS.items():
        profiles = ", ".join(specs[name].file.profiles) if name in specs else "(no valid spec)"
        table.add_row(name, ", ".join(task.metric_names), profiles, task.summary)
    out.print(table)
    table = Table(title="backends")
    for col in ("backend", "methods", "precisions", "scalings", "gradient", "available"):
        table.add_column(col)
    for name, backend in BACKENDS.items():
        caps = backend.caps
        missing = backend.missing_dependency()
        table.add_row(
            name, ", ".join(sorted(caps.methods)), ", ".join(sorted(caps.precisions)),
            ", ".join(sorted(caps.scalings)), caps.gradient, "yes" if not missing else f"no: {missing}",
        )
    out.print(table)
    table = Table(title="precisions")
    for col in ("precision", "network (compute)", "stored", "accumulated", "TF32"):
        table.add_column(col)
    for name, p in PRECISIONS.items():
        table.add_row(name, str(p.compute), str(p.storage), str(p.accumulate), "on" if p.tf32 else "off")
    out.print(table)
    table = Table(title="scalings")
    table.add_column("scaling")
    table.add_column("meaning")
    for name, s in SCALINGS.items():
        table.add_row(name, s.description)
    out.print(table)
    return 0


# ---------------------------------------------------------------- run
class Reporter:
    """Progress bar over cells plus one log line per finished cell (readable in CI logs too)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False, disable=not console.is_terminal,  # CI logs get the lines only
        )
        self.bar = None

    def start(self, n: int, skipped: int) -> None:
        if skipped:
            console.print(f"resume: {skipped} cell(s) already recorded ok are skipped")
        self.progress.start()
        self.bar = self.progress.add_task("cells", total=n)
        self.n_done = 0

    def cell_started(self, cell: Cell) -> None:
        self.progress.update(self.bar, description=cell.cell_id)

    def cell_progress(self, fraction: float) -> None:
        self.progress.update(self.bar, completed=self.n_done + min(max(fraction, 0.0), 1.0) * 0.99)

    def cell_finished(self, cell: Cell, record: dict) -> None:
        self.n_done += 1
        self.progress.update(self.bar, completed=self.n_done)
        colour = {"ok": "green", "unsupported": "yellow"}.get(record["status"], "red")
        total = record["timing"].get("total_s")
        timing = f" {total:.2f}s" if isinstance(total, float) else ""
        reason = f" — {record['reason']}" if record["reason"] else ""
        self.progress.console.print(
            f"[{colour}]{record['status']:>11}[/{colour}] {cell.cell_id}{timing}{reason}", highlight=False
        )

    def finish(self, summary) -> None:
        self.progress.stop()


def _select(values: list[str] | None, registry, axis: str) -> set[str] | None:
    if not values:
        return None
    for v in values:
        if v not in registry:
            raise UsageError(f"--{axis} {v!r} is not a known {axis}; allowed: {', '.join(sorted(registry.names()))}")
    return set(values)


def _cells_for_run(args) -> list[Cell]:
    specs = {}
    for path in spec_files():
        spec = load_spec(path)
        specs[spec.task] = spec
    tasks = args.task or list(specs)
    for t in tasks:
        if t not in specs:
            raise UsageError(f"--task {t!r} has no spec; tasks with specs: {', '.join(sorted(specs))}")
    backends = _select(args.backend, BACKENDS, "backend")
    precisions = _select(args.precision, PRECISIONS, "precision")
    scalings = _select(args.scaling, SCALINGS, "scaling")
    cells: list[Cell] = []
    for t in tasks:
        spec = specs[t]
        if args.profile not in spec.file.profiles:
            raise UsageError(
                f"--profile {args.profile!r} is not defined for task {t}; defined: {', '.join(spec.file.profiles)}"
            )
        for cell in expand(spec, args.profile):
            if backends and cell.backend not in backends:
                continue
            if precisions and cell.precision not in precisions:
                continue
            if scalings and cell.scaling not in scalings:
                continue
            if args.device:
                cell = dataclasses.replace(cell, device=args.device)
            cells.append(cell)
    if not cells:
        raise UsageError("the filters select no cell of the chosen tasks' matrices")
    return cells


def cmd_run(args) -> int:
    from suite.runner import new_run_id, run_cells

    cells = _cells_for_run(args)
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR, the run directory to continue")
    if args.out:
        out_dir = Path(args.out)
        run_id = out_dir.name
        if args.resume and (out_dir / "records.jsonl").exists():
            try:
                previous = read_records(out_dir)
            except RecordsError as exc:
                raise UsageError(f"cannot resume: {exc}") from None
            run_id = previous[0]["run_id"] if previous else run_id
        elif (out_dir / "records.jsonl").exists():
            raise UsageError(f"{out_dir} already holds records; add --resume to continue that run, "
                             "or choose another --out")
    else:
        run_id = new_run_id(args.profile)
        out_dir = Path("results") / run_id
    console.print(f"run {run_id}: {len(cells)} cell(s) → {out_dir / 'records.jsonl'}")
    summary = run_cells(cells, out_dir, run_id, resume=args.resume, reporter=Reporter())
    counts = ", ".join(f"{v} {k}" for k, v in sorted(summary.counts.items())) or "nothing to run"
    console.print(f"done: {counts}; records in {out_dir / 'records.jsonl'}")
    if args.report:
        cmd_report(argparse.Namespace(run_dir=str(out_dir), out=None))
    if summary.n_errors:
        console.print(f"{summary.n_errors} cell(s) ended in error (a suite or data problem, not a numerical finding)")
    return 1 if summary.n_errors else 0


# ---------------------------------------------------------------- report
def cmd_report(args) -> int:
    from suite.report import build_report

    try:
        files = build_report(args.run_dir, args.out)
    except RecordsError as exc:
        raise UsageError(str(exc)) from None
    out.print(f"report written to {files.out_dir}/index.md ({len(files.files)} files)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate spec files (all shipped specs by default)")
    p.add_argument("files", nargs="*")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("list", help="show tasks, backends (and what each supports), precisions, scalings")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("run", help="expand the matrix and run its cells, one record per cell")
    p.add_argument("--task", action="append", help="task to run (repeatable; default: every spec)")
    p.add_argument("--profile", default="smoke", help="profile name from the specs (default: smoke)")
    p.add_argument("--backend", action="append", help="only these backends (repeatable)")
    p.add_argument("--precision", action="append", help="only these precisions (repeatable)")
    p.add_argument("--scaling", action="append", help="only these scalings (repeatable)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="override the profile's device")
    p.add_argument("--out", help="run directory (default: results/<run-id>)")
    p.add_argument("--resume", action="store_true", help="skip cells already recorded ok in --out")
    p.add_argument("--report", action="store_true", help="build the report when the run ends")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="build tables and figures from a run directory")
    p.add_argument("run_dir")
    p.add_argument("--out", help="report directory (default: reports/<run-id>)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return args.func(args)
    except (UsageError, SpecError, UnknownNameError) as exc:
        console.print(f"ctbench {args.command}: error: {exc}", markup=False, highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
