"""`ctbench run`: the matrix from the specs, filtered by the flags, run by the chosen executor."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path

from suite.backends import BACKENDS
from suite.cli.common import EXIT_INTERRUPTED, UsageError, console, held_lock, run_id_for
from suite.cli.progress import Reporter
from suite.cli.report import cmd_report
from suite.executors import ExecutorConfig, ExecutorKind, load_executor_config
from suite.executors.coordinator import Coordinator
from suite.executors.inprocess import new_run_id, run_cells
from suite.precision import PRECISIONS
from suite.registry import Registry
from suite.scaling import SCALINGS
from suite.spec import Cell, expand, spec_files, specs_for_tasks

__all__ = ["register", "cmd_run"]


def _select(values: list[str] | None, registry: Registry, axis: str) -> set[str] | None:
    if not values:
        return None
    for v in values:
        if v not in registry:
            raise UsageError(f"--{axis} {v!r} is not a known {axis}; allowed: {', '.join(sorted(registry.names()))}")
    return set(values)


def cells_for_run(args: argparse.Namespace) -> list[Cell]:
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


def _resume_hint(args: argparse.Namespace, out_dir: Path) -> str:
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


def _executor_config(args: argparse.Namespace) -> ExecutorConfig:
    """The executor settings file with the command line's flags on top; a flag of another executor is an
    error, not silently ignored."""
    overrides = {
        "executor": args.executor, "checkpoint_every": args.checkpoint_every, "timeout_grace_s": args.timeout_grace,
        "local.jobs": args.jobs, "local.cells_per_gpu": args.cells_per_gpu, "local.threads_per_cell": args.threads,
        "local.gpus": [int(g) for g in args.gpus.split(",")] if args.gpus else None,
        "slurm.partition": args.slurm_partition, "slurm.gpus_per_task": args.slurm_gpus_per_task,
        "slurm.account": args.slurm_account, "slurm.qos": args.slurm_qos, "slurm.max_parallel": args.max_parallel,
    }
    config = load_executor_config(Path(args.executor_config) if args.executor_config else None, overrides)
    if config.executor != ExecutorKind.LOCAL and (args.jobs or args.cells_per_gpu or args.gpus or args.threads):
        raise UsageError(f"--jobs, --cells-per-gpu, --gpus and --threads are settings of --executor local, not "
                         f"{config.executor}")
    if config.executor != ExecutorKind.SLURM and any(v is not None for v in (
            args.slurm_partition, args.slurm_gpus_per_task, args.slurm_account, args.slurm_qos, args.max_parallel)):
        raise UsageError(f"--slurm-* and --max-parallel are settings of --executor slurm, not {config.executor}")
    return config


def cmd_run(args: argparse.Namespace) -> int:
    if args.gpus and not all(g.strip().isdigit() for g in args.gpus.split(",")):
        raise UsageError(f"--gpus {args.gpus!r}: expected comma-separated GPU indices such as 0,1,2,3")
    config = _executor_config(args)
    cells = cells_for_run(args)
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR, the run directory to continue")
    if args.out:
        out_dir = Path(args.out)
        run_id = run_id_for(out_dir)
    else:
        run_id = new_run_id(args.profile)
        out_dir = Path("results") / run_id
    _writable(out_dir)
    inprocess = config.executor == ExecutorKind.INPROCESS
    records_path = out_dir / "records.jsonl"
    with held_lock(out_dir):
        if records_path.exists() and records_path.stat().st_size and not args.resume:
            raise UsageError(f"{out_dir} already holds records; add --resume to continue that run, "
                             "or choose another --out")
        where = "" if inprocess else f" ({config.executor} executor)"
        console.print(f"run {run_id}: {len(cells)} cell(s) → {records_path}{where}")
        try:
            if inprocess:
                summary = run_cells(cells, out_dir, run_id, resume=args.resume, reporter=Reporter(),
                                    retry_failed=args.retry_failed, rerun_changed=args.rerun_changed,
                                    checkpoint_every=args.checkpoint_every)
            else:
                summary = Coordinator(config, out_dir, run_id, reporter=Reporter()).run(
                    cells, resume=args.resume, retry_failed=args.retry_failed, rerun_changed=args.rerun_changed)
        except OSError as exc:  # a full or read-only run directory under a job executor (in-process: RunStoreError)
            if inprocess:
                raise
            raise UsageError(f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}: the run "
                             f"stopped; records that jobs wrote and that could not be merged wait in {out_dir}/cells "
                             f"(and in {tempfile.gettempdir()}/ctbench-unsaved-*.jsonl when even that failed). Free "
                             f"space or fix permissions, then:\n  {_resume_hint(args, out_dir)}") from None
        except KeyboardInterrupt:
            stopped = "the cell in flight was" if inprocess else "the running cells were"
            console.print(f"interrupted: {stopped} not recorded (training cells keep their last checkpoint); "
                          f"every finished cell is in {records_path}. Continue with:\n  {_resume_hint(args, out_dir)}")
            return EXIT_INTERRUPTED
    counts = summary.counts_text()
    if config.executor == ExecutorKind.SLURM:
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


def register(sub: argparse._SubParsersAction) -> None:
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
    g.add_argument("--executor", choices=[kind.value for kind in ExecutorKind],
                   help="inprocess (default): every cell in this process; local: one process per cell on this "
                        "machine; slurm: one job per cell (job arrays)")
    g.add_argument("--executor-config", metavar="TOML", help="executor settings file (keys as in the README)")
    g.add_argument("--jobs", type=int, help="local: cells at once (CUDA cells also need a free GPU)")
    g.add_argument("--gpus", metavar="LIST", help="local: GPU indices to use, e.g. 0,1,2,3 (default: all visible)")
    g.add_argument("--threads", type=int, metavar="N",
                   help="local: torch threads per CPU cell (default: OMP_NUM_THREADS if set, else cores ÷ jobs)")
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
