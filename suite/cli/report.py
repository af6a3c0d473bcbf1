"""`ctbench report`: tables and figures from a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from suite.cli.common import UsageError, out, run_id_for
from suite.records import RecordsError
from suite.report import build_report

__all__ = ["register", "cmd_report"]


def cmd_report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    out_dir = Path(args.out) if args.out else Path("reports") / run_id_for(run_dir, flag="report --out")
    try:
        files = build_report(run_dir, out_dir, reference_dir=getattr(args, "with_reference", None))
    except RecordsError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from None
    out.print(f"report written to {files.out_dir}/index.md ({len(files.files)} files)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="build tables and figures from a run directory")
    p.add_argument("run_dir")
    p.add_argument("--out", help="report directory (default: reports/<run-id>)")
    p.add_argument("--with-reference", metavar="DIR", default=None,
                   help="lead the report with a committed reference run's results (e.g. results/reference-cpu)")
    p.set_defaults(func=cmd_report)
