"""The coordinator: hands cells to jobs (one process each), merges their records, and survives its own death.

Every cell runs in its own job process, so a hung kernel is killed at the cell's hard limit, and a segfault,
an exit() or an allocator failure ends that cell only. Records come back through files (suite.executors.exchange),
merged into records.jsonl exactly once. A coordinator killed with -9 loses nothing: its local jobs' controllers
do not die with it, so the jobs finish and write their records, and the next `ctbench collect` or `--resume`
merges them; a resumed coordinator adopts jobs still running instead of starting their cells again.

Local: at most `jobs` cells at once, and at most `cells_per_gpu` (1) per GPU, each with CUDA_VISIBLE_DEVICES
set to its GPU. SLURM: cells become job arrays and the coordinator returns at once; `ctbench status` follows them
and `ctbench collect` (or `--resume`) merges their records.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from suite.backends import BACKENDS, get_backend
from suite.cell import RecordHeaders, failure_outcome, make_record, unsupported_reason
from suite.executors.config import ExecutorConfig, ExecutorConfigError
from suite.executors.exchange import JOBS, Manifest, collect, now_iso, write_plan
from suite.executors.inprocess import RunSummary
from suite.executors.jobs import jobs_for
from suite.executors.reconcile import reconcile, record_job_failure
from suite.executors.reporter import RunReporter
from suite.executors.worker import cell_payload
from suite.records import RecordStore, Status, read_records, validate_run_id
from suite.registry import plugin_modules_from_env
from suite.resume import NOT_KNOWABLE_HERE, plan_resume
from suite.spec import Cell
from suite.tasks import TASKS, get_task

__all__ = ["Coordinator", "plugin_imports"]

POLL_S = 0.25


def plugin_imports(cell: Cell) -> list[str]:
    """Modules a worker must import to find the cell's task and backend (plug-ins outside ctbench)."""
    own = []  # members from entry points are not listed: the worker loads every installed plug-in itself
    if cell.task not in TASKS.from_entry_points:
        own.append(type(get_task(cell.task)).__module__)
    if cell.backend not in BACKENDS.from_entry_points:
        own.append(type(get_backend(cell.backend)).__module__)
    return sorted({m for m in own if not m.startswith("suite.")} | set(plugin_modules_from_env()))


@dataclass
class _Running:
    cell: Cell
    entry: dict
    job: Any | None  # a submitit job; None for one adopted from an earlier coordinator
    gpu: int | None


class Coordinator:
    """Runs a matrix through a job engine (local or SLURM); the caller holds the run directory's lock."""

    def __init__(self, config: ExecutorConfig, out_dir: Path, run_id: str,
                 reporter: RunReporter | None = None) -> None:
        validate_run_id(run_id)
        self.config, self.out_dir, self.run_id, self.reporter = config, out_dir, run_id, reporter
        self.kind = config.executor
        self.engine = jobs_for(self.kind, out_dir, config)
        self.manifest = Manifest(out_dir)
        self.summary = RunSummary(run_id=run_id, out_dir=out_dir)
        # the coordinator's own machine (a login node may have no GPU): see _header
        self.headers = RecordHeaders(run_id, env_device="cpu")

    # ------------------------------------------------------------ shared
    def _header(self, cell: Cell) -> dict:
        """The record header the coordinator can know (its own env): used only for records of cells whose job
        wrote none; a worker's record carries the env and inputs of the machine that ran it."""
        return self.headers(cell)

    def _payload(self, cell: Cell, submission: str, info: dict) -> dict:
        return {"cell": cell_payload(cell), "run_id": self.run_id, "out_dir": str(self.out_dir.resolve()),
                "submission": submission, "checkpoint_every": self.config.checkpoint_every,
                "imports": plugin_imports(cell), "threads": info.get("threads"), "executor": info}

    def _entry(self, cell: Cell, submission: str, job_fields: dict, info: dict) -> dict:
        return {"submission": submission, "cell_id": cell.cell_id, "executor": self.kind, "submitted_at": now_iso(),
                "timeout_s": cell.timeout_s, "hard_limit_s": self.config.hard_limit_s(cell.timeout_s),
                "executor_info": info, "header": self._header(cell), **job_fields}

    def _finished(self, cell: Cell | None, record: dict) -> None:
        self.summary.recorded(record["status"])
        if self.reporter and cell is not None:
            self.reporter.cell_finished(cell, record)

    def _record_unsupported(self, cell: Cell, reason: str) -> None:
        """Cells that cannot run here are decided without a process, exactly as in-process."""
        record = make_record(self._header(cell), now_iso(), failure_outcome(Status.UNSUPPORTED.value, reason),
                             record_id=uuid.uuid4().hex, executor={"kind": self.kind})
        RecordStore(self.out_dir / "records.jsonl").append(record)
        self._finished(cell, record)

    def _inputs_now(self, cell: Cell) -> dict:
        """What resume compares; a GPU that only the cluster's nodes have is not judged from a login node."""
        inputs = dict(self.headers.inputs(cell))
        if self.kind == "slurm" and cell.device == "cuda" and not torch.cuda.is_available():
            inputs["device_class"] = NOT_KNOWABLE_HERE
        return inputs

    def plan(self, cells: list[Cell], resume: bool, retry_failed: bool, rerun_changed: bool
             ) -> tuple[list[Cell], dict[str, dict]]:
        """(cells to submit, live jobs of earlier submissions to adopt: cell id → manifest entry)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        adopted: dict[str, dict] = {}
        store = RecordStore(self.out_dir / "records.jsonl")
        todo = cells
        if resume:
            if store.path.exists():
                store.prepare_for_append()
            state = reconcile(self.out_dir, self.config)
            wanted = {c.cell_id for c in cells}
            adopted = {k: v for k, v in state.in_flight.items() if k in wanted}
            previous = read_records(store.path) if store.path.exists() else []
            plan = plan_resume([c for c in cells if c.cell_id not in adopted], previous, retry_failed=retry_failed,
                               rerun_changed=rerun_changed, inputs=self._inputs_now)
            todo, self.summary.kept = plan.todo, plan.kept
            if previous:
                self.run_id = self.summary.run_id = previous[0]["run_id"]
        self.summary.skipped = len(cells) - len(todo) - len(adopted)
        return todo, adopted

    # ------------------------------------------------------------ run
    def run(self, cells: list[Cell], resume: bool = False, retry_failed: bool = False,
            rerun_changed: bool = False) -> RunSummary:
        todo, adopted = self.plan(cells, resume, retry_failed, rerun_changed)
        write_plan(self.out_dir, self.run_id, self.kind, [c.cell_id for c in todo] + list(adopted))
        if self.reporter:
            self.reporter.start(len(todo) + len(adopted), self.summary.skipped, self.summary.kept)
            for cell_id in adopted:
                self.reporter.note(f"adopted: {cell_id} is still running in job {adopted[cell_id]['job_id']} "
                                   "(started by an earlier coordinator); its record will be merged")
        runnable = []
        for cell in todo:
            reason = unsupported_reason(cell, check_device=self.kind != "slurm")
            if reason:
                self._record_unsupported(cell, reason)
            else:
                runnable.append(cell)
        try:
            if self.kind == "slurm":
                try:
                    self._submit_slurm(runnable)
                except BaseException:
                    if not self.summary.submitted and not adopted:  # nothing is queued: no plan to show
                        (self.out_dir / JOBS / "plan.json").unlink(missing_ok=True)
                    raise
            else:
                by_id = {c.cell_id: c for c in cells}
                self._run_local(runnable, {by_id[k]: v for k, v in adopted.items()})
        finally:
            if self.reporter:
                self.reporter.finish(self.summary)
        return self.summary

    # ------------------------------------------------------------ SLURM: submit and return
    def _submit_slurm(self, cells: list[Cell]) -> None:
        groups: dict[tuple[str, int], list[Cell]] = {}
        for cell in cells:
            groups.setdefault((cell.device, self.config.slurm_time_min(cell.timeout_s)), []).append(cell)
        for (device, _), group in groups.items():
            slurm = self.config.slurm
            info = {"kind": "slurm", "gpus": (slurm.gres or slurm.gpus_per_task) if device == "cuda" else 0,
                    "threads": slurm.cpus_per_task}  # torch would otherwise count the node's cores
            submissions = [uuid.uuid4().hex for _ in group]
            payloads = [self._payload(c, s, info) for c, s in zip(group, submissions, strict=True)]
            jobs, fields = self.engine.submit_array(device, group[0].timeout_s, payloads)
            for cell, submission, job in zip(group, submissions, jobs, strict=True):
                self.manifest.append(self._entry(cell, submission, {**fields, "job_id": job.job_id}, info))
                self.summary.submitted += 1
                if self.reporter:
                    self.reporter.note(f"submitted: {cell.cell_id} → SLURM job {job.job_id}")

    # ------------------------------------------------------------ local: run to the end
    def _gpus(self) -> list[int]:
        if self.config.local.gpus is not None:
            return list(self.config.local.gpus)
        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []

    def _threads(self) -> int:
        local = self.config.local
        omp = os.environ.get("OMP_NUM_THREADS", "")
        if local.threads_per_cell:
            return local.threads_per_cell
        if omp.isdigit() and int(omp) > 0:  # the user's own setting, inherited by the workers: honoured
            return int(omp)
        return max(1, (os.cpu_count() or 1) // local.jobs)

    def _run_local(self, todo: list[Cell], adopted: dict[Cell, dict]) -> None:
        local = self.config.local
        gpus = self._gpus()
        load: Counter = Counter()
        running: dict[str, _Running] = {}  # submission id → running cell
        for cell, entry in adopted.items():
            running[entry["submission"]] = _Running(cell, entry, None, entry["executor_info"].get("gpu"))
        pending = list(todo)
        if not gpus and any(c.device == "cuda" for c in pending):
            raise ExecutorConfigError("CUDA cells to run but no GPU to give them: the executor's `gpus` list is "
                                      "empty (set --gpus, or leave it unset to use every visible GPU)")
        reported: set[str] = set()
        try:
            while pending or running:
                for cell in list(pending):
                    if len(running) >= local.jobs:
                        break
                    gpu = None
                    if cell.device == "cuda":
                        free = [g for g in gpus if load[g] < local.cells_per_gpu]
                        if not free:
                            continue
                        gpu = min(free, key=lambda g: load[g])
                    pending.remove(cell)
                    running_one = self._submit_local(cell, gpu)
                    running[running_one.entry["submission"]] = running_one
                    if gpu is not None:
                        load[gpu] += 1
                time.sleep(POLL_S)
                ended = [s for s, r in running.items() if self.engine.state(r.entry, r.job) == "ended"]
                if not ended:
                    continue
                state = reconcile(self.out_dir, self.config, live=set(running) - set(ended))
                self._report(state.merged, running, reported)
                for submission in ended:
                    if submission not in reported:  # ended, but superseded in the manifest: judged here
                        record_job_failure(self.out_dir, running[submission].entry,
                                        self.engine.ended(running[submission].entry))
                        self._report(collect(self.out_dir).merged, running, reported)
                    done = running.pop(submission)  # its slot is free once its process is gone, not before
                    if done.gpu is not None:
                        load[done.gpu] -= 1
        except BaseException:
            for r in running.values():
                if r.job is not None:  # stopped on purpose: no failure record, --resume runs the cell again
                    self.engine.cancel(r.job)
                    self.manifest.append({**r.entry, "cancelled": now_iso()})
            raise

    def _report(self, merged: list[dict], running: dict[str, _Running], reported: set[str]) -> None:
        for record in merged:
            done = running.get(record.get("record_id"))
            self._finished(done.cell if done else None, record)
            reported.add(record.get("record_id"))

    def _submit_local(self, cell: Cell, gpu: int | None) -> _Running:
        submission = uuid.uuid4().hex
        info = {"kind": "local", "threads": self._threads() if cell.device == "cpu" else None, "gpu": gpu,
                "cells_per_gpu": self.config.local.cells_per_gpu if gpu is not None else None,
                "shared_gpu": gpu is not None and self.config.local.cells_per_gpu > 1}
        job, fields = self.engine.submit(self._payload(cell, submission, info), cell.timeout_s, gpu)
        entry = self._entry(cell, submission, fields, info)
        self.manifest.append(entry)
        if self.reporter:
            self.reporter.cell_started(cell)
        return _Running(cell, entry, job, gpu)
