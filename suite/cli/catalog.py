"""`ctbench validate` (spec files, checked as a run would load them) and `ctbench list` (what is registered)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from rich.table import Table
from rich.text import Text

from suite.backends import BACKENDS
from suite.cli.common import out, styled
from suite.precision import PRECISIONS
from suite.scaling import SCALINGS
from suite.spec import SpecError, expand, load_spec, spec_files, specs_for_tasks
from suite.tasks import TASKS

__all__ = ["register", "cmd_validate", "cmd_list"]


def cmd_validate(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.files] or spec_files()
    failed = 0
    for path in paths:
        try:
            spec = load_spec(path)
            n = {p: len(expand(spec, p)) for p in spec.file.profiles}
            out.print(Text.assemble(styled("green", "ok"), f" {path} (task {spec.task}; cells per profile: {n})"))
        except SpecError as exc:
            failed += 1
            out.print(Text.assemble(styled("red", "invalid"), f" {path}"))
            for loc, msg in exc.problems:
                out.print(f"  {path}: {loc or '<top level>'}: {msg}")
    try:  # one spec per task among the files validated together
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unreadable files were reported above
            specs_for_tasks(paths, tasks=[])
    except SpecError as exc:
        failed += 1
        out.print(Text.assemble(styled("red", "invalid"), f" {exc}"))
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="validate spec files (all shipped specs by default)")
    p.add_argument("files", nargs="*")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("list", help="show tasks, backends (and what each supports), precisions, scalings")
    p.set_defaults(func=cmd_list)
