"""What runs inside a job's process: one cell, its record written to its own file.

The job's argument is plain JSON (the cell's fields and parameters, never pickled ctbench objects), so a
worker needs only an importable ctbench, plus the modules that registered the cell's task and backend when
they are plug-ins (`imports`). A stop signal asks a training cell to checkpoint at the next iteration, and the
job continues from that checkpoint when it runs again: SIGUSR2 (SLURM's time-limit warning) and the local
controller's SIGTERM then requeue the job through submitit; SLURM's own SIGTERM (scontrol requeue, preemption,
scancel, the time limit) only exits, and SLURM requeues the job or not.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from pathlib import Path

import submitit
import torch

from suite.cell import RecordHeaders, make_record, run_cell
from suite.checkpoint import PREEMPTION, CellPreempted
from suite.executors.exchange import (
    RunningMarker,
    now_iso,
    read_marker,
    running_marker,
    save_unsaved,
    this_host,
    write_cell_record,
)
from suite.lock import process_start
from suite.registry import load_plugins
from suite.spec import Cell
from suite.tasks import get_task

__all__ = ["CellJob", "cell_payload", "cell_from_payload", "run_payload"]


def cell_payload(cell: Cell) -> dict:
    fields = {f.name: getattr(cell, f.name) for f in dataclasses.fields(cell) if f.name != "params"}
    return {"fields": fields, "params": cell.params.model_dump(mode="json")}


def cell_from_payload(payload: dict) -> Cell:
    params = get_task(payload["fields"]["task"]).Params.model_validate(payload["params"])
    return Cell(**payload["fields"], params=params)


def _job_id() -> str:
    """The job id as the manifest and sacct name it (array tasks: <array id>_<task id>)."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID") or str(os.getpid())


def run_payload(payload: dict) -> str:
    """Run the payload's cell in this process; write its record file; return the file's path."""
    load_plugins()  # installed plug-ins (entry points) and CTBENCH_PLUGINS, as the CLI loaded them
    for module in payload.get("imports", []):  # a plug-in module that registered itself in the caller
        importlib.import_module(module)
    if payload.get("threads"):
        torch.set_num_threads(int(payload["threads"]))
    cell = cell_from_payload(payload["cell"])
    out_dir = Path(payload["out_dir"])
    PREEMPTION.install()
    marker_path = running_marker(out_dir, cell.cell_id)
    previous = read_marker(marker_path) or {}
    attempt = previous.get("attempt", 0) + 1 if previous.get("submission") == payload["submission"] else 1
    executor = {**payload["executor"], "job_id": _job_id(), "host": this_host(), "pid": os.getpid(),
                "submission": payload["submission"], "attempt": attempt, "threads": torch.get_num_threads(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    # pid and start time: how a coordinator tells this worker alive after its controller died (jobs.py)
    marker = RunningMarker(marker_path, {"cell_id": cell.cell_id, "submission": payload["submission"],
                                         "state": "running", "started_at": now_iso(), "attempt": attempt, **executor,
                                         "pid_start": process_start(os.getpid())})
    started_at = now_iso()
    try:
        outcome = run_cell(cell, progress=marker.progress, run_dir=out_dir,
                           checkpoint_every=payload["checkpoint_every"], on_detail=marker.detail)
    except CellPreempted as exc:
        if _slurm_ends_the_job(PREEMPTION.signal_name):
            # SLURM's own SIGTERM (scontrol requeue, preemption, scancel, the time limit): SLURM decides what
            # follows, and requeueing here would bring back a job the user cancelled
            marker.write(0.0, force=True, state="stopped", note=f"{exc}; SLURM ends the job (it requeues it "
                                                                "or not)")
            sys.exit(EXIT_STOPPED)
        marker.write(0.0, force=True, state="requeued", note=str(exc))
        submitit.JobEnvironment()._requeue(0)  # local: exits with submitit's requeue code; SLURM: scontrol requeue
        sys.exit(-1)
    if cell.device == "cpu":  # this process ran this cell alone: its peak RSS is the cell's own
        outcome["memory"] = {**outcome["memory"], "per_cell": True,
                             "what": "peak RSS (ru_maxrss) of the cell's own process, imports included"}
    record = make_record(RecordHeaders(payload["run_id"])(cell), started_at, outcome,
                         record_id=payload["submission"], executor=executor)
    try:
        path = write_cell_record(out_dir, record)
    except OSError as exc:  # a full or read-only run directory: keep the computed record somewhere, say where
        saved = save_unsaved(record, payload["run_id"])
        where = f"saved to {saved}" if saved else "not saved anywhere"
        print(f"ctbench worker: cannot write the record of {cell.cell_id} to {out_dir}: "
              f"{exc.strerror or exc}; the record was {where}", file=sys.stderr)
        sys.exit(EXIT_UNSAVED)
    marker.remove()
    return str(path)


EXIT_UNSAVED = 75  # EX_TEMPFAIL: the cell finished, its record could not be written into the run directory
EXIT_STOPPED = 143  # 128 + SIGTERM: stopped by SLURM after saving a checkpoint


def _slurm_ends_the_job(signal_name: str) -> bool:
    """SIGTERM inside a SLURM job is SLURM ending it; only SIGUSR2 (the time-limit warning asked for with
    --signal) is the job's cue to requeue itself. submitit reads the two signals the same way."""
    return signal_name == "SIGTERM" and os.environ.get("SUBMITIT_EXECUTOR") == "slurm"



class CellJob(submitit.helpers.Checkpointable):
    """The callable submitit pickles: `CellJob()(payload)`. Checkpointable, so submitit's own USR2 handling
    (if a signal arrives before the worker installed its handlers) requeues it with the same payload."""

    def __call__(self, payload: dict) -> str:
        return run_payload(payload)
