"""The `ctbench` parser and `main`: each command module adds its own sub-parser (`register`); `main` loads the
plug-ins once, runs the command and turns every expected failure into one line and exit code 2."""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

import suite.cli.catalog as catalog
import suite.cli.gate as gate
import suite.cli.jobs as jobs
import suite.cli.report as report
import suite.cli.run as run
from suite.cli.common import EXIT_BUG, EXIT_INTERRUPTED, EXIT_USAGE, UsageError, console
from suite.executors import ExecutorConfigError
from suite.executors.inprocess import RunStoreError
from suite.records import RecordsError
from suite.registry import PluginError, UnknownNameError, load_plugins
from suite.resume import ResumeMismatch
from suite.spec import SpecError

__all__ = ["build_parser", "main", "COMMANDS"]

COMMANDS = (catalog, run, jobs, gate, report)  # in the order `ctbench --help` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctbench", description="one command from spec to report: "
                                     "validate | list | run | collect | status | compare | gate | report")
    parser.add_argument("--debug", action="store_true", help="print full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one plain line (they carry data such as paths: never markup, never a source excerpt)."""
    console.print(f"ctbench: warning: {message}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run" and (args.retry_failed or args.rerun_changed) and not args.resume:
        console.print("ctbench run: error: --retry-failed and --rerun-changed go with --resume")
        return EXIT_USAGE
    try:
        load_plugins()
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            return args.func(args)
    except (UsageError, SpecError, UnknownNameError, ResumeMismatch, RunStoreError, RecordsError,
            ExecutorConfigError, PluginError) as exc:
        console.print(f"ctbench {args.command}: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print(f"ctbench {args.command}: interrupted")
        return EXIT_INTERRUPTED
    except OSError as exc:  # the machine's answer (a read-only folder, a full disk, a missing file), not a bug
        where = f" ({exc.filename})" if exc.filename else ""
        console.print(f"ctbench {args.command}: error: {exc.strerror or exc}{where}")
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 — one line, not a traceback, unless --debug
        if args.debug:
            console.print(traceback.format_exc())
        else:
            console.print(f"ctbench {args.command}: error: {type(exc).__name__}: {exc} "
                          "(this is likely a bug; run with --debug for the traceback)")
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
