"""`ctbench validate | list | run | report`: one command from spec to report.

Every piece of data (cell ids, reasons, paths, spec text) is printed as plain text: the consoles have rich
markup off, and colour is added with `Text` styles only, so a `[...]` in a message is printed as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
import warnings
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from suite.backends import BACKENDS
from suite.lock import RunLock, RunLocked
from suite.precision import PRECISIONS
from suite.records import RecordsError, validate_run_id
from suite.registry import UnknownNameError
from suite.scaling import SCALINGS
from suite.spec import Cell, SpecError, expand, load_spec, spec_files, specs_for_tasks
from suite.tasks import TASKS

__all__ = ["main"]

EXIT_INTERRUPTED = 130


def _consoles() -> tuple[Console, Console]:
    err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False, emoji=False)
    std = Console(soft_wrap=True, markup=False, highlight=False, emoji=False)
    if not std.is_terminal:  # logs and pipes: wide enough that tables are not squeezed into 80 columns
        std = Console(soft_wrap=True, width=220, markup=False, highlight=False, emoji=False)
    return err, std


console, out = _consoles()


def _styled(style: str, text: str) -> Text:
    return Text(text, style=style)


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
            out.print(Text.assemble(_styled("green", "ok"), f" {path} (task {spec.task}; cells per profile: {n})"))
        except SpecError as exc:
            failed += 1
            out.print(Text.assemble(_styled("red", "invalid"), f" {path}"))
            for loc, msg in exc.problems:
                out.print(f"  {path}: {loc or '<top level>'}: {msg}")
    try:  # one spec per task among the files validated together
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unreadable files were reported above
            specs_for_tasks(paths, tasks=[])
    except SpecError as exc:
        failed += 1
        out.print(Text.assemble(_styled("red", "invalid"), f" {exc}"))
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
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False, disable=not console.is_terminal,  # CI logs get the lines only
        )
        self.bar = None
        self.n_done = 0

    def start(self, n: int, skipped: int, kept=None) -> None:
        if skipped:
            kept = kept or {}
            detail = ", ".join(f"{v} {k}" for k, v in sorted(kept.items())) or "recorded"
            hint = (" (--retry-failed re-runs the nonfinite/oom/timeout ones)"
                    if any(kept.get(s) for s in ("nonfinite", "oom", "timeout")) else "")
            console.print(f"resume: {skipped} cell(s) already recorded ({detail}) are kept; {n} to run{hint}")
        self.progress.start()
        self.bar = self.progress.add_task("cells", total=n)
        self.n_done = 0

    def cell_started(self, cell: Cell) -> None:
        self.progress.update(self.bar, description=cell.cell_id)

    def cell_progress(self, fraction: float) -> None:
        self.progress.update(self.bar, completed=self.n_done + min(max(fraction, 0.0), 1.0) * 0.99)

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
            Text.assemble(_styled(colour, f"{record['status']:>11}"), f" {cell.cell_id}{timing}{reason}")
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
    paths = [Path(p) for p in args.spec] if args.spec else spec_files()
    specs = specs_for_tasks(paths, args.task)
    for t in args.task or []:
        if t not in specs:
            where = "the --spec files" if args.spec else "the shipped specs"
            raise UsageError(f"--task {t!r} has no spec in {where}; tasks with specs: "
                             f"{', '.join(sorted(specs)) or '(none)'}")
    backends = _select(args.backend, BACKENDS, "backend")
    precisions = _select(args.precision, PRECISIONS, "precision")
    scalings = _select(args.scaling, SCALINGS, "scaling")
    variants = set(args.variant) if args.variant else None
    cells: list[Cell] = []
    for t, spec in specs.items():
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
            if variants and cell.variant not in variants:
                continue
            if args.device:
                cell = dataclasses.replace(cell, device=args.device)
            cells.append(cell)
    if variants:
        defined = {v for spec in specs.values() for v in spec.file.variants}
        unknown = sorted(variants - defined)
        if unknown:
            raise UsageError(f"--variant {unknown[0]!r} is not a variant of the chosen tasks; defined: "
                             f"{', '.join(sorted(defined))}")
    if not cells:
        raise UsageError("the filters select no cell of the chosen tasks' matrices")
    return cells


def _run_id_for(run_dir: Path, flag: str = "--out") -> str:
    """A run directory's id: its name (`--out .` names the current directory)."""
    resolved = run_dir.resolve()
    if resolved.is_file():  # a records.jsonl given directly
        resolved = resolved.parent
    try:
        return validate_run_id(resolved.name, where=f"{run_dir} gives run id")
    except RecordsError as exc:
        raise UsageError(f"{exc}; choose another {flag}") from None


def _writable(out_dir: Path) -> None:
    """Create the run directory; refuse before any cell is computed when it cannot be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".ctbench-write-test-{os.getpid()}"
        with open(probe, "wb") as fh:
            fh.write(b"x" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to the run directory {out_dir}: {exc.strerror or exc}; "
                         "choose another --out or free space / fix permissions") from None


def _resume_hint(args, out_dir: Path) -> str:
    parts = ["ctbench run"]
    for flag in ("task", "spec", "backend", "precision", "scaling", "variant"):
        for value in getattr(args, flag) or []:
            parts.append(f"--{flag} {value}")
    if args.profile != "smoke":
        parts.append(f"--profile {args.profile}")
    if args.device:
        parts.append(f"--device {args.device}")
    parts += [f"--out {out_dir}", "--resume"]
    return " ".join(parts)


def _executor_config(args):
    from suite.executors import load_executor_config

    overrides = {
        "executor": args.executor, "checkpoint_every": args.checkpoint_every, "timeout_grace_s": args.timeout_grace,
        "local.jobs": args.jobs, "local.cells_per_gpu": args.cells_per_gpu,
        "local.gpus": [int(g) for g in args.gpus.split(",")] if args.gpus else None,
        "slurm.partition": args.slurm_partition, "slurm.gpus_per_task": args.slurm_gpus_per_task,
        "slurm.account": args.slurm_account, "slurm.qos": args.slurm_qos, "slurm.max_parallel": args.max_parallel,
    }
    config = load_executor_config(Path(args.executor_config) if args.executor_config else None, overrides)
    if config.executor != "local" and (args.jobs or args.cells_per_gpu or args.gpus):
        raise UsageError(f"--jobs, --cells-per-gpu and --gpus are settings of --executor local, not "
                         f"{config.executor}")
    if config.executor != "slurm" and any(v is not None for v in (
            args.slurm_partition, args.slurm_gpus_per_task, args.slurm_account, args.slurm_qos, args.max_parallel)):
        raise UsageError(f"--slurm-* and --max-parallel are settings of --executor slurm, not {config.executor}")
    return config


def cmd_run(args) -> int:
    from suite.executors.inprocess import new_run_id, run_cells

    if args.gpus and not all(g.strip().isdigit() for g in args.gpus.split(",")):
        raise UsageError(f"--gpus {args.gpus!r}: expected comma-separated GPU indices such as 0,1,2,3")
    config = _executor_config(args)
    cells = _cells_for_run(args)
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR, the run directory to continue")
    if args.out:
        out_dir = Path(args.out)
        run_id = _run_id_for(out_dir)
    else:
        run_id = new_run_id(args.profile)
        out_dir = Path("results") / run_id
    _writable(out_dir)
    try:
        lock = RunLock(out_dir).__enter__()
    except RunLocked as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write the lock file in {out_dir}: {exc.strerror or exc}") from None
    try:
        if lock.took_over:
            console.print(f"note: took over the lock of a process that ended without releasing it "
                          f"(pid {lock.took_over.get('pid')} on {lock.took_over.get('host')})")
        records_path = out_dir / "records.jsonl"
        if records_path.exists() and records_path.stat().st_size and not args.resume:
            raise UsageError(f"{out_dir} already holds records; add --resume to continue that run, "
                             "or choose another --out")
        where = "" if config.executor == "inprocess" else f" ({config.executor} executor)"
        console.print(f"run {run_id}: {len(cells)} cell(s) → {records_path}{where}")
        try:
            if config.executor == "inprocess":
                summary = run_cells(cells, out_dir, run_id, resume=args.resume, reporter=Reporter(),
                                    retry_failed=args.retry_failed, rerun_changed=args.rerun_changed,
                                    checkpoint_every=args.checkpoint_every)
            else:
                from suite.executors.coordinator import Coordinator

                summary = Coordinator(config, out_dir, run_id, reporter=Reporter()).run(
                    cells, resume=args.resume, retry_failed=args.retry_failed, rerun_changed=args.rerun_changed)
        except KeyboardInterrupt:
            stopped = "the cell in flight was" if config.executor == "inprocess" else "the running cells were"
            console.print(f"interrupted: {stopped} not recorded (training cells keep their last checkpoint); "
                          f"every finished cell is in {records_path}. Continue with:\n  {_resume_hint(args, out_dir)}")
            return EXIT_INTERRUPTED
    finally:
        lock.release()
    counts = ", ".join(f"{v} {k}" for k, v in sorted(summary.counts.items())) or "nothing to run"
    if config.executor == "slurm":
        console.print(f"submitted: {counts}. Follow with `ctbench status {out_dir} --watch`; merge records with "
                      f"`ctbench collect {out_dir}` (or `--resume`, which also submits what is missing)")
        return 0
    console.print(f"done: {counts}; records in {records_path}")
    if args.report:
        cmd_report(argparse.Namespace(run_dir=str(out_dir), out=None,
                                      with_reference=getattr(args, "with_reference", None)))
    if summary.n_errors:
        console.print(f"{summary.n_errors} cell(s) ended in error (a suite or data problem, not a numerical finding)")
    return 1 if summary.n_errors else 0


# ---------------------------------------------------------------- collect / status
def cmd_collect(args) -> int:
    from suite.executors import ExecutorConfig
    from suite.executors.reconcile import reconcile

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    try:
        lock = RunLock(run_dir).__enter__()
    except RunLocked as exc:
        raise UsageError(f"{exc}; a live coordinator merges records itself") from None
    try:
        result = reconcile(run_dir, ExecutorConfig())
    finally:
        lock.release()
    counts = ", ".join(f"{v} {k}" for k, v in sorted(Counter(r["status"] for r in result.merged).items()))
    console.print(f"collect {run_dir}: merged {len(result.merged)} record(s) ({counts or 'nothing new'}); "
                  f"{len(result.failed)} of them recorded for jobs that ended without one; "
                  f"{len(result.in_flight)} cell(s) still queued or running")
    return 0


def _status_table(run_dir: Path) -> tuple[Table, dict[str, int]]:
    from suite.executors.status import run_status

    rows = run_status(run_dir)
    table = Table(title=f"status {run_dir}")
    for col in ("cell", "state", "job", "detail"):
        table.add_column(col)
    colours = {"ok": "green", "unsupported": "yellow"}
    totals: dict[str, int] = {}
    for row in rows:
        colour = colours.get(row.status, "red") if row.state == "done" else {"running": "cyan"}.get(row.state, "")
        table.add_row(row.cell_id, _styled(colour, row.label), row.job, row.detail)
        totals[row.label] = totals.get(row.label, 0) + 1
    return table, totals


def cmd_status(args) -> int:
    import time

    run_dir = Path(args.run_dir)
    if args.interval <= 0:
        raise UsageError(f"--interval must be a positive number of seconds, got {args.interval}")
    if not args.watch:
        table, totals = _status_table(run_dir)
        out.print(table)
        out.print(", ".join(f"{v} {k}" for k, v in sorted(totals.items())))
        return 0
    from rich.live import Live

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


# ---------------------------------------------------------------- report
def cmd_report(args) -> int:
    from suite.report import build_report

    run_dir = Path(args.run_dir)
    out_dir = Path(args.out) if args.out else Path("reports") / _run_id_for(run_dir, flag="report --out")
    try:
        files = build_report(run_dir, out_dir, reference_dir=getattr(args, "with_reference", None))
    except RecordsError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from None
    out.print(f"report written to {files.out_dir}/index.md ({len(files.files)} files)")
    return 0


# ---------------------------------------------------------------- compare / gate
def _gate_overrides(tasks: set[str], spec_paths: list[str] | None) -> dict[str, dict[str, float]]:
    """Per task, the spec's [gate] tolerances (shipped specs, or --spec files)."""
    paths = [Path(p) for p in spec_paths] if spec_paths else spec_files()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        specs = specs_for_tasks(paths, sorted(tasks))
    return {task: dict(spec.file.gate) for task, spec in specs.items()}


def _print_gate(result, title: str, markdown: str | None) -> None:
    table = Table(title=title)
    for col in ("verdict", "cell", "metric", "old", "new", "change", "rule", "why"):
        table.add_column(col)
    colours = {"regression": "red", "improvement": "green", "new": "cyan", "note": "yellow"}
    for row in sorted(result.rows, key=lambda r: (r.verdict != "regression", r.verdict == "ok", r.cell)):
        if row.verdict == "ok":
            continue
        table.add_row(_styled(colours.get(row.verdict, ""), row.verdict), row.cell, row.metric, row.old, row.new,
                      row.change, row.rule, row.why)
    for note in result.notes:
        console.print(f"note: {note}")
    if table.row_count:
        out.print(table)
    n_ok = sum(r.verdict == "ok" for r in result.rows)
    console.print(f"{len(result.regressions)} regression(s); {n_ok} check(s) within tolerance; "
                  f"{sum(r.verdict == 'improvement' for r in result.rows)} improvement(s)")
    text = result.markdown(title)
    if markdown:
        Path(markdown).write_text(text)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(text)


def _read_run(path: str) -> list[dict]:
    from suite.records import read_records

    return read_records(Path(path))


def cmd_compare(args) -> int:
    from suite.gate import compare_records

    old, new = _read_run(args.run_a), _read_run(args.run_b)
    tasks = set(args.task) if args.task else {r["task"] for r in new}
    result = compare_records(old, new, args.task, _gate_overrides(tasks, args.spec), time_factor=args.time_factor)
    _print_gate(result, f"compare {args.run_a} → {args.run_b}", args.markdown)
    return 0


def cmd_gate(args) -> int:
    from suite.baseline import BaselineError, load_baseline, write_baseline
    from suite.gate import compare_records

    run = _read_run(args.run)
    baseline = Path(args.baseline)
    if args.update:
        command = " ".join(["ctbench gate", args.run, "--baseline", args.baseline, "--update",
                            *(f"--task {t}" for t in args.task or [])])
        try:
            meta = write_baseline(baseline, run, args.task, command)
        except BaselineError as exc:
            raise UsageError(str(exc)) from None
        console.print(f"baseline {baseline} written: {meta['cells']} cells of {', '.join(meta['tasks'])} "
                      f"(commit {', '.join(meta['git_sha'])}, {', '.join(meta['device_class'])})")
        return 0
    try:
        old, meta = load_baseline(baseline)
    except BaselineError as exc:
        if not (baseline / "records.jsonl").exists():
            console.print(_styled("bold yellow", f"NOTHING TO COMPARE: {exc}"))
            return 0
        raise UsageError(str(exc)) from None
    tasks = set(args.task) if args.task else {r["task"] for r in run}
    result = compare_records(old, run, args.task, _gate_overrides(tasks, args.spec), time_factor=args.time_factor)
    result.notes.insert(0, f"baseline {baseline}: commit {', '.join(meta.get('git_sha', []))}, "
                           f"{', '.join(meta.get('device_class', []))}")
    _print_gate(result, f"gate {args.run} against {baseline}", args.markdown)
    return 1 if result.regressions else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctbench", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="print full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate spec files (all shipped specs by default)")
    p.add_argument("files", nargs="*")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("list", help="show tasks, backends (and what each supports), precisions, scalings")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("run", help="expand the matrix and run its cells, one record per cell")
    p.add_argument("--task", action="append", help="task to run (repeatable; default: every spec)")
    p.add_argument("--spec", action="append", metavar="PATH",
                   help="run this spec file instead of the shipped ones (repeatable; validated like them)")
    p.add_argument("--variant", action="append", help="only these variants (repeatable)")
    p.add_argument("--profile", default="smoke", help="profile name from the specs (default: smoke)")
    p.add_argument("--backend", action="append", help="only these backends (repeatable)")
    p.add_argument("--precision", action="append", help="only these precisions (repeatable)")
    p.add_argument("--scaling", action="append", help="only these scalings (repeatable)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="override the profile's device")
    p.add_argument("--out", help="run directory (default: results/<run-id>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out: run cells not yet recorded and those that ended in error")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --resume: also re-run cells that ended nonfinite, oom or timeout")
    p.add_argument("--rerun-changed", action="store_true",
                   help="with --resume: re-run cells recorded with other inputs (data set, device, torch) "
                        "instead of refusing")
    p.add_argument("--report", action="store_true", help="build the report when the run ends")
    p.add_argument("--with-reference", metavar="DIR", default=None,
                   help="with --report: lead the report with a committed reference run's results "
                        "(e.g. results/reference-cpu), labelled with its commit and date")
    g = p.add_argument_group("executors (see README: Running on many GPUs and on SLURM)")
    g.add_argument("--executor", choices=["inprocess", "local", "slurm"],
                   help="inprocess (default): every cell in this process; local: one process per cell on this "
                        "machine; slurm: one job per cell (job arrays)")
    g.add_argument("--executor-config", metavar="TOML", help="executor settings file (keys as in the README)")
    g.add_argument("--jobs", type=int, help="local: cells at once (CUDA cells also need a free GPU)")
    g.add_argument("--gpus", metavar="LIST", help="local: GPU indices to use, e.g. 0,1,2,3 (default: all visible)")
    g.add_argument("--cells-per-gpu", type=int,
                   help="local: cells sharing one GPU (default 1; more makes their timings meaningless)")
    g.add_argument("--max-parallel", type=int, help="slurm: array parallelism (cells running at once)")
    g.add_argument("--slurm-partition")
    g.add_argument("--slurm-gpus-per-task", type=int)
    g.add_argument("--slurm-account")
    g.add_argument("--slurm-qos")
    g.add_argument("--checkpoint-every", type=int, metavar="K",
                   help="training cells checkpoint every K iterations (local/slurm default 25; inprocess: off)")
    g.add_argument("--timeout-grace", type=float, metavar="S",
                   help="local/slurm: kill a cell this many seconds after its timeout_s (default 60)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("collect", help="merge the records of a run's jobs into records.jsonl (exactly once)")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_collect)
    p = sub.add_parser("status", help="each cell of a run: queued, running, done: status")
    p.add_argument("run_dir")
    p.add_argument("--watch", action="store_true", help="refresh until no cell is queued or running")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    p.set_defaults(func=cmd_status)
    for name, helptext in (("compare", "compare two runs cell by cell, metric by metric"),
                           ("gate", "gate a run against a committed baseline; non-zero exit on a regression")):
        p = sub.add_parser(name, help=helptext)
        if name == "compare":
            p.add_argument("run_a")
            p.add_argument("run_b")
            p.set_defaults(func=cmd_compare)
        else:
            p.add_argument("run")
            p.add_argument("--baseline", required=True, help="a baseline folder, e.g. baselines/cpu-smoke")
            p.add_argument("--update", action="store_true",
                           help="write the baseline from this run instead (a run of committed code only)")
            p.set_defaults(func=cmd_gate)
        p.add_argument("--task", action="append", help="only these tasks (repeatable)")
        p.add_argument("--spec", action="append", metavar="PATH", help="spec files for [gate] tolerances")
        p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown (CI summaries)")
        p.add_argument("--time-factor", type=float, default=None,
                       help="how much a within-run time ratio may grow before it is a regression "
                            "(default: 2.5 on CPU, 1.5 on CUDA)")
    p = sub.add_parser("report", help="build tables and figures from a run directory")
    p.add_argument("run_dir")
    p.add_argument("--out", help="report directory (default: reports/<run-id>)")
    p.add_argument("--with-reference", metavar="DIR", default=None,
                   help="lead the report with a committed reference run's results (e.g. results/reference-cpu)")
    p.set_defaults(func=cmd_report)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one plain line (they carry data such as paths: never markup, never a source excerpt)."""
    console.print(f"ctbench: warning: {message}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run" and (args.retry_failed or args.rerun_changed) and not args.resume:
        console.print("ctbench run: error: --retry-failed and --rerun-changed go with --resume")
        return 2
    from suite.executors import ExecutorConfigError, import_plugins
    from suite.executors.inprocess import RunStoreError
    from suite.resume import ResumeMismatch

    import_plugins()

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            return args.func(args)
    except (UsageError, SpecError, UnknownNameError, ResumeMismatch, RunStoreError, RecordsError,
            ExecutorConfigError) as exc:
        console.print(f"ctbench {args.command}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        console.print(f"ctbench {args.command}: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 — one line, not a traceback, unless --debug
        if args.debug:
            console.print(traceback.format_exc())
        else:
            console.print(f"ctbench {args.command}: error: {type(exc).__name__}: {exc} "
                          "(this is likely a bug; run with --debug for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
