"""`ctbench compare` (two runs, cell by cell) and `ctbench gate` (a run against a committed baseline).

This is where the gate is handed its rules: every registered task's (`suite.tasks.gate_rules`), with a spec's
`[gate]` tolerances on top. `compare_records` here is suite.gate's with those task rules bound.
"""

from __future__ import annotations

import argparse
import math
import os
import warnings
from pathlib import Path

from rich.table import Table

from suite import gate
from suite.baseline import BaselineError, load_baseline, write_baseline
from suite.cli.common import UsageError, console, out, styled
from suite.records import read_records
from suite.spec import spec_files, specs_for_tasks
from suite.tasks import gate_rules

__all__ = ["register", "cmd_compare", "cmd_gate", "compare_records"]


def compare_records(old: list[dict], new: list[dict], tasks: list[str] | None = None,
                    overrides: dict[str, dict[str, float]] | None = None, **tolerances) -> gate.GateResult:
    """suite.gate.compare_records with every registered task's rules (plug-ins included)."""
    return gate.compare_records(old, new, tasks, overrides, task_rules=gate_rules(), **tolerances)


def positive_factor(text: str) -> float:
    """An argparse type: a finite number above zero (a NaN or non-positive factor would pass everything)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text!r}")
    return value


def _check_tasks(wanted: list[str] | None, *runs: list[dict]) -> None:
    """`--task` names a task of the runs compared, or the comparison would silently skip it."""
    present = {r["task"] for run in runs for r in run}
    unknown = sorted(set(wanted or []) - present)
    if unknown:
        raise UsageError(f"--task {unknown[0]!r} has no records here; tasks in the records: "
                         f"{', '.join(sorted(present)) or '(none)'}")


def _checked_something(result: gate.GateResult, allow_empty: bool) -> None:
    """A comparison that compared no metric, status or time is not a pass (all cells new, disjoint tasks)."""
    if allow_empty or any(r.verdict in ("ok", "regression", "improvement") for r in result.rows):
        return
    why = "; ".join(result.notes) or "no cell is in both"
    raise UsageError(f"the comparison checked nothing ({why}); --allow-empty accepts an empty comparison")


def _gate_overrides(tasks: set[str], spec_paths: list[str] | None) -> dict[str, dict[str, float]]:
    """Per task, the spec's [gate] tolerances (shipped specs, or --spec files)."""
    paths = [Path(p) for p in spec_paths] if spec_paths else spec_files()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        specs = specs_for_tasks(paths, sorted(tasks))
    return {task: dict(spec.file.gate) for task, spec in specs.items()}


def _print_gate(result: gate.GateResult, title: str, markdown: str | None) -> None:
    table = Table(title=title)
    for col in ("verdict", "cell", "metric", "old", "new", "change", "rule", "why"):
        table.add_column(col)
    colours = {"regression": "red", "improvement": "green", "new": "cyan", "note": "yellow"}
    for row in sorted(result.rows, key=lambda r: (r.verdict != "regression", r.verdict == "ok", r.cell)):
        if row.verdict == "ok":
            continue
        table.add_row(styled(colours.get(row.verdict, ""), row.verdict), row.cell, row.metric, row.old, row.new,
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


def _markdown_target(path: str | None) -> None:
    """Refuse a --markdown file whose folder does not exist before anything is compared."""
    if path and not Path(path).resolve().parent.is_dir():
        raise UsageError(f"--markdown {path}: the folder {Path(path).parent} does not exist")


def cmd_compare(args: argparse.Namespace) -> int:
    _markdown_target(args.markdown)
    old, new = read_records(Path(args.run_a)), read_records(Path(args.run_b))
    _check_tasks(args.task, old, new)
    tasks = set(args.task) if args.task else {r["task"] for r in new}
    result = compare_records(old, new, args.task, _gate_overrides(tasks, args.spec), time_factor=args.time_factor)
    _print_gate(result, f"compare {args.run_a} → {args.run_b}", args.markdown)
    _checked_something(result, args.allow_empty)
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    _markdown_target(args.markdown)
    run = read_records(Path(args.run))
    baseline = Path(args.baseline)
    if args.update:
        _check_tasks(args.task, run)
        command = " ".join(["ctbench gate", args.run, "--baseline", args.baseline, "--update",
                            *(f"--task {t}" for t in args.task or []), *(["--force"] if args.force else [])])
        try:
            meta = write_baseline(baseline, run, args.task, command, force=args.force)
        except BaselineError as exc:
            raise UsageError(str(exc)) from None
        console.print(f"baseline {baseline} written: {meta['cells']} cells of {', '.join(meta['tasks'])} "
                      f"(commit {', '.join(meta['git_sha'])}, {', '.join(meta['device_class'])})")
        return 0
    if args.force:
        raise UsageError("--force goes with --update (it writes a baseline from specs that are not committed)")
    try:
        old, meta = load_baseline(baseline)
    except BaselineError as exc:
        raise UsageError(str(exc)) from None
    _check_tasks(args.task, old, run)
    tasks = set(args.task) if args.task else {r["task"] for r in run}
    result = compare_records(old, run, args.task, _gate_overrides(tasks, args.spec), time_factor=args.time_factor)
    result.notes.insert(0, f"baseline {baseline}: commit {', '.join(meta.get('git_sha', []))}, "
                           f"{', '.join(meta.get('device_class', []))}")
    _print_gate(result, f"gate {args.run} against {baseline}", args.markdown)
    _checked_something(result, args.allow_empty)
    return 1 if result.regressions else 0


def register(sub: argparse._SubParsersAction) -> None:
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
            p.add_argument("--force", action="store_true",
                           help="with --update: accept specs that are not committed in this repository")
            p.set_defaults(func=cmd_gate)
        p.add_argument("--task", action="append", help="only these tasks (repeatable)")
        p.add_argument("--spec", action="append", metavar="PATH", help="spec files for [gate] tolerances")
        p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown (CI summaries)")
        p.add_argument("--allow-empty", action="store_true",
                       help="exit 0 even when nothing was compared (no cell in both runs)")
        p.add_argument("--time-factor", type=positive_factor, default=None,
                       help="how much a within-run time ratio may grow before it is a regression "
                            "(default: 2.5 on CPU, 1.5 on CUDA)")
