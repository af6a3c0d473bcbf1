"""The two submitit engines ctbench drives, behind one small interface: submit a cell, say what its job is
doing, and say how it ended when it wrote no record.

- `LocalJobs`: submitit's LocalExecutor with ctbench's controller (suite.executors._controller), one process
  per cell on this machine, CUDA_VISIBLE_DEVICES set per job, killed at the cell's hard limit.
- `SlurmJobs`: submitit's SlurmExecutor; cells become job arrays, states come from sacct through submitit.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import submitit
from submitit.core.utils import JobPaths

from suite.executors._controller import EXIT_SUFFIX
from suite.executors.config import ExecutorConfig, SlurmRejected, SlurmUnavailable
from suite.executors.exchange import JOBS, read_marker, running_marker, this_host, write_json_atomic
from suite.executors.worker import EXIT_UNSAVED, CellJob
from suite.lock import pid_alive, same_process_alive

__all__ = ["LocalJobs", "SlurmJobs", "JobEnded", "SlurmUnavailable", "jobs_for", "SLURM_STATES", "LOCAL_NO_LIMIT_MIN"]

LOCAL_NO_LIMIT_MIN = 7 * 24 * 60  # submitit's local executor always has a limit: a week for unbounded cells


class JobEnded:
    """How a job that wrote no record ended: the status and reason its record gets."""

    def __init__(self, status: str, reason: str, detail: str | None = None) -> None:
        self.status, self.reason, self.detail = status, reason, detail


TAIL_CAP = 64 * 1024  # characters of a job's stderr kept in its record


def cap_text(text: str, cap: int = TAIL_CAP) -> str:
    """At most `cap` characters: the head and the tail, with how much was cut between them."""
    if len(text) <= cap:
        return text
    half = cap // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def _log_tail(folder: Path, job_id: str, lines: int = 25) -> str | None:
    """The last lines of the job's stderr (a crash's traceback), capped: one line may be megabytes."""
    paths = JobPaths(folder, job_id=job_id, task_id=0)
    try:
        text = paths.stderr.read_text(errors="replace")
    except OSError:
        return None
    tail = text.strip().splitlines()[-lines:]
    return cap_text("\n".join(tail)) if tail else None


# ---------------------------------------------------------------- local
class _ControlledLocalExecutor(submitit.LocalExecutor):
    """submitit's LocalExecutor, starting ctbench's controller (it keeps each task's exit status)."""

    def _submit_command(self, command: str):
        ntasks = self.parameters.get("tasks_per_node", 1)
        gpus = self.parameters.get("visible_gpus", ())
        env = dict(os.environ)
        env.update(
            SUBMITIT_LOCAL_NTASKS=str(ntasks), SUBMITIT_LOCAL_COMMAND=command,
            SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * self.parameters.get("timeout_min", LOCAL_NO_LIMIT_MIN))),
            SUBMITIT_LOCAL_SIGNAL_DELAY_S="0",  # no USR2 before the kill: the cell's own deadline came first
            SUBMITIT_LOCAL_NODEID="0", SUBMITIT_LOCAL_JOB_NUM_NODES="1", SUBMITIT_STDERR_TO_STDOUT="",
            SUBMITIT_EXECUTOR="local", CUDA_VISIBLE_DEVICES=",".join(str(g) for g in gpus),
            SUBMITIT_LOCAL_WITH_SHELL="",
        )
        process = subprocess.Popen([sys.executable, "-m", "suite.executors._controller", str(self.folder)], env=env)
        return submitit.local.local.LocalJob(folder=self.folder, job_id=str(process.pid), process=process,
                                             tasks=list(range(ntasks)))


def _controller_alive(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    try:  # a reused pid is not our controller (a zombie's cmdline is empty: it has ended)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"suite.executors._controller" in cmdline
    except OSError:
        return True


class LocalJobs:
    kind = "local"

    def __init__(self, out_dir: Path, config: ExecutorConfig) -> None:
        self.out_dir = out_dir
        self.folder = out_dir / JOBS / "local"
        self.config = config
        self._executor: _ControlledLocalExecutor | None = None

    @property
    def executor(self) -> _ControlledLocalExecutor:
        if self._executor is None:
            self._executor = _ControlledLocalExecutor(folder=self.folder, max_num_timeout=0)
        return self._executor

    def submit(self, payload: dict, timeout_s: float | None, gpu: int | None):
        limit = self.config.hard_limit_s(timeout_s)
        self.executor.update_parameters(
            timeout_min=LOCAL_NO_LIMIT_MIN if limit is None else limit / 60,
            visible_gpus=() if gpu is None else (gpu,),
        )
        job = self.executor.submit(CellJob(), payload)
        return job, {"job_id": job.job_id, "host": this_host(), "folder": str(self.folder)}

    def _exit_info(self, entry: dict) -> dict | None:
        try:
            return json.loads((Path(entry["folder"]) / f"{entry['job_id']}{EXIT_SUFFIX}").read_text())
        except (OSError, ValueError):
            return None

    def state(self, entry: dict, job=None) -> str:
        """queued | running | ended | elsewhere (a job of another host: this machine cannot see it).

        A job is its worker's, not its controller's: a worker that outlived a killed controller (kill -9 of a
        coordinator's process group, an OOM kill) still runs its cell, so the job is running until the worker
        ends; it is killed here at the cell's hard limit, which its dead controller can no longer enforce."""
        if job is not None:
            if job._process is not None and job._process.poll() is None:
                return "running"
        elif entry.get("host") != this_host():
            return "elsewhere"
        elif _controller_alive(int(entry["job_id"])):
            return "running"
        orphan = self._orphaned_worker(entry)
        if orphan is None:
            return "ended"
        if self._past_hard_limit(entry, orphan):
            self._stop_orphan(entry, orphan)
            return "ended"
        return "running"

    def _orphaned_worker(self, entry: dict) -> dict | None:
        """The running marker of this submission's worker when that very process (pid and start time) lives."""
        marker = read_marker(running_marker(self.out_dir, entry["cell_id"]))
        if not marker or marker.get("submission") != entry["submission"] or marker.get("host") != this_host():
            return None
        pid = marker.get("pid")
        return marker if isinstance(pid, int) and same_process_alive(pid, marker.get("pid_start")) else None

    @staticmethod
    def _past_hard_limit(entry: dict, marker: dict) -> bool:
        limit = entry.get("hard_limit_s")
        try:
            started = _dt.datetime.fromisoformat(marker["started_at"])
        except (KeyError, TypeError, ValueError):
            return False
        return limit is not None and (_dt.datetime.now(_dt.UTC) - started).total_seconds() > limit

    def _stop_orphan(self, entry: dict, marker: dict) -> None:
        """Kill a worker past its hard limit and leave the exit file its controller would have written."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(marker["pid"], signal.SIGKILL)  # the worker leads its process group (_controller.py)
        with contextlib.suppress(ProcessLookupError):
            os.kill(marker["pid"], signal.SIGKILL)  # a worker of an older controller, in the controller's group
        info = {"exit_codes": [None], "timed_out": True, "attempts": marker.get("attempt", 1),
                "limit_s": entry.get("hard_limit_s"), "killed_by": "the coordinator (the job's controller had died)"}
        write_json_atomic(Path(entry["folder"]) / f"{entry['job_id']}{EXIT_SUFFIX}", info)

    def ended(self, entry: dict) -> JobEnded:
        info = self._exit_info(entry)
        detail = _log_tail(Path(entry["folder"]), entry["job_id"])
        if info is None:
            return JobEnded("error", f"the job's controller (pid {entry['job_id']}) ended without an exit status "
                                     "and the cell wrote no record (was the controller killed?)", detail)
        if info["timed_out"]:
            return JobEnded("timeout", f"killed at its hard limit of {info['limit_s']} s (timeout_s "
                                       f"{entry.get('timeout_s')} s + grace): the cell did not stop at its own "
                                       "deadline (a hung kernel or a blocking call)", detail)
        code = info["exit_codes"][0] if info["exit_codes"] else None
        return JobEnded("error", _exit_reason(code), detail)

    def prefetch(self, entries: Sequence[dict]) -> None:
        """Nothing to ask: a local job's state is its controller's pid."""

    def cancel(self, job) -> None:
        job.cancel()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "the cell's process did not report an exit status"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        hint = " (the kernel's out-of-memory killer is the usual sender)" if -code == signal.SIGKILL else ""
        return f"the cell's process was killed by {name} (signal {-code}){hint} before writing its record"
    if code == 0:
        return "the cell's process exited with code 0 without writing its record"
    if code == EXIT_UNSAVED:
        return (f"the cell finished but could not write its record into the run directory (exit {code}: a full or "
                "read-only disk); its stderr below says where the record was saved")
    return f"the cell's process exited with code {code} before writing its record"


# ---------------------------------------------------------------- SLURM
# sacct state → what ctbench shows (queued/running) or records when the job wrote no record.
SLURM_STATES: dict[str, tuple[str, str]] = {
    "PENDING": ("queued", ""), "REQUEUED": ("queued", ""), "REQUEUE_HOLD": ("queued", ""),
    "REQUEUE_FED": ("queued", ""), "CONFIGURING": ("queued", ""), "SUSPENDED": ("queued", ""),
    "RESV_DEL_HOLD": ("queued", ""),
    "RUNNING": ("running", ""), "COMPLETING": ("running", ""), "STAGE_OUT": ("running", ""),
    "SIGNALING": ("running", ""), "RESIZING": ("running", ""),
    "COMPLETED": ("error", "the job completed without writing the cell's record"),
    "TIMEOUT": ("timeout", "SLURM killed the job at its time limit (timeout_s + grace + margin)"),
    "DEADLINE": ("timeout", "SLURM killed the job at its deadline"),
    "OUT_OF_MEMORY": ("oom", "SLURM killed the job for exceeding its memory allocation (OUT_OF_MEMORY)"),
    "FAILED": ("error", "the job failed (non-zero exit or a signal) before writing the cell's record"),
    "NODE_FAIL": ("error", "the job's node failed"),
    "BOOT_FAIL": ("error", "the job's node failed to boot"),
    "CANCELLED": ("error", "the job was cancelled"),
    "PREEMPTED": ("error", "the job was preempted and not requeued (enable requeue on the partition, or "
                           "resume the run)"),
    "REVOKED": ("error", "the job was revoked"),
}


class SlurmJobs:
    kind = "slurm"

    def __init__(self, out_dir: Path, config: ExecutorConfig) -> None:
        self.folder = out_dir / JOBS / "slurm"
        self.config = config

    def executor(self, device: str, timeout_s: float | None) -> submitit.SlurmExecutor:
        s = self.config.slurm
        try:
            executor = submitit.SlurmExecutor(folder=self.folder, max_num_timeout=0)
        except RuntimeError as exc:  # submitit checks for srun
            raise SlurmUnavailable(f"--executor slurm needs SLURM's commands (srun, sbatch, sacct) on PATH: {exc} "
                                   "Run it on the cluster's login node, or use --executor local here") from None
        params = {
            "job_name": s.job_name, "time": self.config.slurm_time_min(timeout_s), "nodes": 1, "ntasks_per_node": 1,
            "cpus_per_task": s.cpus_per_task, "array_parallelism": s.max_parallel,
            "signal_delay_s": s.signal_delay_s, "setup": list(s.setup),
            "additional_parameters": {"requeue": True, **s.additional},
        }
        if device == "cuda" and s.gres:
            params["gres"] = s.gres
        elif device == "cuda":
            params["gpus_per_task"] = s.gpus_per_task
        for name in ("partition", "account", "qos", "constraint", "exclude"):
            value = getattr(s, name)
            if value is not None:
                params[name] = value
        if s.mem_gb is not None:
            params["mem"] = f"{int(s.mem_gb * 1024)}M"
        executor.update_parameters(**params)
        return executor

    def submit_array(self, device: str, timeout_s: float | None, payloads: Sequence[dict]):
        """One job array for cells sharing a device and a time limit; returns their jobs in order."""
        executor = self.executor(device, timeout_s)
        try:  # submitit prints sbatch's complaint itself too: kept for the one message below instead
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                jobs = [executor.submit(CellJob(), payload) for payload in payloads]
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as exc:
            answer = (str(exc).strip().splitlines() or ["(no message)"])[0]
            raise SlurmRejected(f"sbatch refused the job array of {len(payloads)} {device} cell(s): {answer}; "
                                "nothing of it was submitted (check --slurm-partition, --slurm-account, "
                                "--slurm-qos and the executor settings file)") from None
        return jobs, {"folder": str(self.folder), "host": this_host()}

    def job(self, entry: dict) -> submitit.SlurmJob:
        return submitit.SlurmJob(folder=Path(entry["folder"]), job_id=entry["job_id"])

    def prefetch(self, entries: Sequence[dict]) -> None:
        """One sacct call for many jobs (submitit's watcher asks for every registered job at once)."""
        if entries:
            for entry in entries:
                self.job(entry)  # registers it with the shared watcher
            submitit.SlurmJob.watcher.update()

    def sacct_state(self, entry: dict) -> str:
        watcher = self.job(entry).watcher
        info = watcher.get_info(entry["job_id"], mode="cache") or watcher.get_info(entry["job_id"], mode="force")
        return (info.get("State") or "UNKNOWN").split()[0].upper()

    def state(self, entry: dict, job=None) -> str:
        state = self.sacct_state(entry)
        if state in SLURM_STATES:
            mapped = SLURM_STATES[state][0]
            return mapped if mapped in ("queued", "running") else "ended"
        return "unknown"

    def ended(self, entry: dict) -> JobEnded:
        state = self.sacct_state(entry)
        status, reason = SLURM_STATES.get(state, ("error", f"unknown SLURM state {state}"))
        return JobEnded(status, f"{reason} [SLURM {state}, job {entry['job_id']}]",
                        _log_tail(Path(entry["folder"]), entry["job_id"]))

    def cancel(self, job) -> None:
        job.cancel(check=False)


def jobs_for(kind: str, out_dir: Path, config: ExecutorConfig):
    if kind == "local":
        return LocalJobs(out_dir, config)
    if kind == "slurm":
        return SlurmJobs(out_dir, config)
    raise ValueError(f"no job engine for executor {kind!r}")


def sbatch_command_line(executor: submitit.SlurmExecutor) -> str:
    """The submission script submitit would write (for `--dry-run` and tests)."""
    return executor._make_submission_file_text(
        " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(executor.folder))]),
        uid="dry-run")
