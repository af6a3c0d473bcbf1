"""The local executor with real processes: hangs are killed, crashes and OOMs stay in their cell, a coordinator
killed with -9 loses nothing and runs nothing twice, a preempted training cell continues from its checkpoint,
and records equal the in-process executor's. Each test starts real job processes (a few seconds each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite.cell import record_header
from suite.executors import load_executor_config
from suite.executors.coordinator import Coordinator
from suite.executors.exchange import Manifest, collect, now_iso, read_marker, read_plan, this_host, write_cell_record
from suite.lock import pid_alive
from suite.records import RecordStore, latest_by_cell, read_records
from suite.spec import Cell
from suite.tasks.stiff_rk4 import StiffParams

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TIME_KEYS = ("time", "_s", "mem")


@pytest.fixture(scope="module", autouse=True)
def _plugins():
    """Job processes import the stub backends through CTBENCH_PLUGINS, from the repository root."""
    old = {k: os.environ.get(k) for k in ("CTBENCH_PLUGINS", "PYTHONPATH")}
    os.environ["CTBENCH_PLUGINS"] = "tests.process_stubs"
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), old["PYTHONPATH"]]))
    import tests.process_stubs  # noqa: F401 — registers proc-* here too

    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _cell(backend: str, timeout_s=None, seed: int = 0) -> Cell:
    return Cell(task="stiff-rk4", variant="published", backend=backend, method="rk4", steps=39, precision="fp32",
                scaling="none", seed=seed, profile="smoke", device="cpu", params=StiffParams(repeats=1),
                spec_hash="t", timeout_s=timeout_s)


def _ctbench(*args: str, cwd: Path, env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "suite", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, **kw)


def _science(record: dict) -> dict:
    return {k: v for k, v in record["metrics"].items() if not any(t in k for t in TIME_KEYS)}


def test_hang_segfault_exit_and_oom_each_end_their_own_cell_only(tmp_path):
    config = load_executor_config(None, {"executor": "local", "local.jobs": 2, "timeout_grace_s": 1.0})
    cells = [_cell("proc-hang", timeout_s=2.0), _cell("proc-segv"), _cell("proc-ok"), _cell("proc-exit"),
             _cell("proc-oom"), _cell("proc-ok", seed=1)]
    started = time.monotonic()
    summary = Coordinator(config, tmp_path, "faults").run(cells)
    elapsed = time.monotonic() - started
    records = {r["backend"] + f"/{r['seed']}": r for r in read_records(tmp_path)}
    assert len(records) == 6 and summary.counts == {"ok": 2, "error": 2, "timeout": 1, "oom": 1}
    assert records["proc-hang/0"]["status"] == "timeout"
    assert "hard limit of 3 s" in records["proc-hang/0"]["reason"]
    assert records["proc-segv/0"]["status"] == "error" and "SIGSEGV (signal 11)" in records["proc-segv/0"]["reason"]
    assert records["proc-exit/0"]["status"] == "error" and "exited with code 3" in records["proc-exit/0"]["reason"]
    assert records["proc-oom/0"]["status"] == "oom"
    assert records["proc-ok/0"]["status"] == records["proc-ok/1"]["status"] == "ok"
    assert records["proc-ok/1"]["executor"]["pid"] != records["proc-ok/0"]["executor"]["pid"]  # own processes
    assert elapsed < 120  # the hang was killed, not waited for
    assert not list((tmp_path / "cells").glob("*.json"))  # every record merged, no worker marker left


def test_local_executor_records_equal_the_in_process_records(tmp_path):
    """Same matrix, same numbers to the last digit (timings and memory aside), whichever executor ran it."""
    args = ["run", "--task", "stiff-rk4", "--backend", "engine", "--variant", "published"]
    inproc = _ctbench(*args, "--out", "a", cwd=tmp_path)
    assert inproc.returncode == 0, inproc.stderr
    local = _ctbench(*args, "--out", "b", "--executor", "local", "--jobs", "2", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    a, b = latest_by_cell(read_records(tmp_path / "a")), latest_by_cell(read_records(tmp_path / "b"))
    assert a.keys() == b.keys() and len(a) >= 5
    for cell_id in a:
        assert a[cell_id]["status"] == b[cell_id]["status"], cell_id
        assert _science(a[cell_id]) == _science(b[cell_id]), cell_id
    assert {r["executor"]["kind"] for r in b.values()} == {"local"}


def _kill_coordinator_after_two_jobs(tmp_path: Path, env: dict) -> str:
    """Start a 4-cell local run (2 at a time), SIGKILL its coordinator once two jobs run; return the spec."""
    spec = str(DATA / "executor-stiff.toml")
    cmd = [sys.executable, "-m", "suite", "run", "--spec", spec, "--executor", "local", "--jobs", "2", "--out", "run"]
    coordinator = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    manifest = Manifest(tmp_path / "run")
    deadline = time.monotonic() + 60
    while len(manifest.entries()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(manifest.entries()) == 2, "the coordinator did not start two jobs"
    os.kill(coordinator.pid, signal.SIGKILL)  # no cleanup, no atexit
    coordinator.wait()
    return spec


def _workers_inside_their_cells(run_dir: Path, n: int) -> list[dict]:
    """The running markers of `n` workers that have reached their cell (each names its pid)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        markers = [m for m in map(read_marker, (run_dir / "cells").glob("*.running.json")) if m and m.get("pid")]
        if len(markers) >= n:
            return markers
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} workers reached their cells")


def test_coordinator_killed_with_sigkill_loses_nothing_and_runs_nothing_twice(tmp_path):
    """kill -9 of the coordinator and of one job's controller while both workers sit inside their cells (held
    there until the test lets them go, so no timing decides the outcome): --resume adopts both live workers,
    runs only the two cells never started, keeps every ok record, and no cell runs twice."""
    calls, hold = tmp_path / "calls.txt", tmp_path / "release"
    env = {"CTBENCH_TEST_CALLS": str(calls), "CTBENCH_TEST_HOLD": str(hold)}
    spec = _kill_coordinator_after_two_jobs(tmp_path, env)
    run = tmp_path / "run"
    workers = _workers_inside_their_cells(run, 2)
    entry = next(e for e in Manifest(run).entries() if e["submission"] == workers[0]["submission"])
    os.kill(int(entry["job_id"]), signal.SIGKILL)  # the controller; its worker lives on without it
    assert all(pid_alive(w["pid"]) for w in workers)
    status = _ctbench("status", "run", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("running") >= 2 and "not started" in status.stdout  # both workers are still theirs
    cmd = [sys.executable, "-m", "suite", "run", "--spec", spec, "--executor", "local", "--jobs", "2", "--out", "run",
           "--resume"]
    resumed = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, **env}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60  # the resume has planned (adopted or not) once it rewrote the plan
    while (read_plan(run) or {}).get("pid") != resumed.pid and time.monotonic() < deadline:
        time.sleep(0.05)
    hold.touch()
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    assert err.count("adopted:") == 2, err
    records = read_records(run)
    assert sorted(r["seed"] for r in records) == [0, 1, 2, 3] and {r["status"] for r in records} == {"ok"}, \
        [(r["seed"], r["status"], r["reason"]) for r in records]
    assert len(calls.read_text().splitlines()) == 4  # each cell's solver ran once: nothing ran twice
    again = _ctbench("collect", "run", cwd=tmp_path)
    assert again.returncode == 0 and "merged 0 record(s)" in again.stderr  # idempotent
    final = _ctbench("status", "run", cwd=tmp_path)
    assert "4 done: ok" in final.stdout


def test_a_workers_own_ok_outranks_a_failure_recorded_while_it_was_thought_dead(tmp_path):
    header = record_header(_cell("proc-ok"), "r", {}, {})
    failure = {**header, "status": "error", "reason": "controller gone", "metrics": {}, "timing": {}, "memory": {},
               "record_id": "sub-1"}
    ok = {**failure, "status": "ok", "reason": "", "metrics": {"x": 1.0}}
    write_cell_record(tmp_path, failure)
    collect(tmp_path)
    write_cell_record(tmp_path, ok)  # the worker finished after all: its record is kept, and is the latest
    assert collect(tmp_path).merged == [ok]
    assert latest_by_cell(RecordStore(tmp_path / "records.jsonl").read())[ok["cell_id"]]["status"] == "ok"
    write_cell_record(tmp_path, failure)  # a failure never replaces an ok of the same submission
    assert collect(tmp_path).duplicates == 1


@pytest.mark.slow  # real processes, ~30 s: in CI's slow step (.ci/run)
def test_orphaned_records_are_merged_by_collect_after_the_coordinator_died(tmp_path):
    calls = tmp_path / "calls.txt"
    env = {"CTBENCH_TEST_CALLS": str(calls), "CTBENCH_TEST_SLOW_S": "3"}
    spec = _kill_coordinator_after_two_jobs(tmp_path, env)
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "run" / "cells").glob("*.record.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    result = _ctbench("collect", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "merged 2 record(s) (2 ok)" in result.stderr
    resumed = _ctbench("run", "--spec", spec, "--executor", "local", "--jobs", "2", "--out", "run", "--resume",
                       cwd=tmp_path, env_extra=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 cell(s) already recorded" in resumed.stderr
    assert len(read_records(tmp_path / "run")) == 4 and len(calls.read_text().splitlines()) == 4


def test_preempted_training_cell_continues_from_its_checkpoint(tmp_path):
    """SIGTERM to the job (what SLURM sends on preemption) → checkpoint → submitit requeue → same numbers."""
    spec = str(DATA / "executor-cnf.toml")
    straight = _ctbench("run", "--spec", spec, "--out", "straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    cmd = [sys.executable, "-m", "suite", "run", "--spec", spec, "--executor", "local", "--out", "run",
           "--checkpoint-every", "10"]
    coordinator = subprocess.Popen(cmd, cwd=tmp_path, env=os.environ.copy(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 60
    while not (checkpoints.exists() and list(checkpoints.glob("*.pt"))) and time.monotonic() < deadline:
        time.sleep(0.02)
    controller = int(Manifest(tmp_path / "run").entries()[0]["job_id"])
    os.kill(controller, signal.SIGTERM)  # the controller forwards it to the cell's process
    _, err = coordinator.communicate(timeout=240)
    assert coordinator.returncode == 0, err
    (record,) = read_records(tmp_path / "run")
    (reference,) = read_records(tmp_path / "straight")
    assert record["status"] == "ok", record["reason"]
    assert record["extra"]["checkpoint"]["restores"] == 1
    assert record["executor"]["attempt"] == 2
    assert _science(record) == _science(reference)
    assert record["timing"]["restore_s"] > 0 and not list(checkpoints.glob("*.pt"))


def test_collect_merges_each_record_exactly_once_even_after_a_crash(tmp_path):
    record = {**record_header(_cell("proc-ok"), "r", {}, {}), "status": "ok", "reason": "", "metrics": {"x": 1.0},
              "timing": {}, "memory": {}, "record_id": "sub-1"}
    write_cell_record(tmp_path, record)
    assert len(collect(tmp_path).merged) == 1
    write_cell_record(tmp_path, record)  # as if the earlier collect died after appending, before deleting
    again = collect(tmp_path)
    assert again.merged == [] and again.duplicates == 1
    assert len(RecordStore(tmp_path / "records.jsonl").read()) == 1
    assert not list((tmp_path / "cells").glob("*.json"))


def test_damaged_cell_record_is_set_aside_with_a_warning(tmp_path):
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "x.abc.record.json").write_text("{not json")
    with pytest.warns(UserWarning, match="not a cell record"):
        assert collect(tmp_path).merged == []
    assert (tmp_path / "cells" / "x.abc.record.bad").exists()


def test_status_follows_a_live_in_process_run_and_watch_returns_when_it_ends(tmp_path):
    spec = str(DATA / "executor-stiff.toml")
    cmd = [sys.executable, "-m", "suite", "run", "--spec", spec, "--out", "run"]
    release = tmp_path / "release"  # the first cell waits for it: the run is live while status looks
    run = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "CTBENCH_TEST_HOLD": str(release)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "run" / "cells").glob("*.running.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    live = _ctbench("status", "run", cwd=tmp_path)
    release.touch()
    assert live.returncode == 0, live.stderr
    assert "running" in live.stdout and "inprocess:" in live.stdout and "queued" in live.stdout
    watched = _ctbench("status", "run", "--watch", "--interval", "0.3", cwd=tmp_path)
    assert watched.returncode == 0 and "4 done: ok" in watched.stdout
    assert run.wait(timeout=60) == 0


class _SimulatedLocalJobs:
    """The local engine's interface with jobs simulated in this process: records concurrency per GPU."""

    kind = "local"

    def __init__(self, out_dir: Path, polls: int = 3) -> None:
        self.out_dir, self.polls = out_dir, polls
        self.live: dict[str, list] = {}
        self.per_gpu: dict[int | None, int] = {}
        self.max_per_gpu: dict[int | None, int] = {}
        self.max_running = 0

    def submit(self, payload, timeout_s, gpu):
        from suite.executors.worker import cell_from_payload

        self.live[payload["submission"]] = [gpu, self.polls, payload]
        self.per_gpu[gpu] = self.per_gpu.get(gpu, 0) + 1
        self.max_per_gpu[gpu] = max(self.max_per_gpu.get(gpu, 0), self.per_gpu[gpu])
        self.max_running = max(self.max_running, len(self.live))
        cell = cell_from_payload(payload["cell"])
        assert cell.device in ("cpu", "cuda")
        return payload["submission"], {"job_id": payload["submission"], "host": "sim", "folder": str(self.out_dir)}

    def prefetch(self, entries):
        pass

    def state(self, entry, job=None):
        from suite.executors.worker import cell_from_payload

        slot = self.live.get(entry["submission"])
        if slot is None:
            return "ended"
        slot[1] -= 1
        if slot[1] > 0:
            return "running"
        gpu, _, payload = self.live.pop(entry["submission"])
        self.per_gpu[gpu] -= 1
        cell = cell_from_payload(payload["cell"])
        write_cell_record(self.out_dir, {**record_header(cell, payload["run_id"], {}, {}), "status": "ok",
                                         "reason": "", "metrics": {}, "timing": {}, "memory": {},
                                         "record_id": payload["submission"], "executor": payload["executor"]})
        return "ended"

    def cancel(self, job):
        pass


def test_local_scheduler_runs_at_most_one_cell_per_gpu_unless_sharing_is_asked_for(tmp_path, monkeypatch):
    import dataclasses

    import suite.executors.coordinator as coordinator

    monkeypatch.setattr(coordinator, "unsupported_reason", lambda cell, check_device=True: None)  # "GPUs" here
    cuda = [dataclasses.replace(_cell("proc-ok", seed=s), device="cuda") for s in range(6)]
    cpu = [_cell("proc-ok", seed=10 + s) for s in range(3)]
    for cells_per_gpu, out in ((1, "one"), (2, "shared")):
        config = load_executor_config(None, {"executor": "local", "local.jobs": 4, "local.gpus": [0, 1],
                                             "local.cells_per_gpu": cells_per_gpu})
        runner = Coordinator(config, tmp_path / out, "r")
        engine = runner.engine = _SimulatedLocalJobs(tmp_path / out)
        summary = runner.run(cuda + cpu)
        assert summary.counts == {"ok": 9}
        assert engine.max_per_gpu[0] == engine.max_per_gpu[1] == cells_per_gpu
        assert engine.max_running <= 4
        records = read_records(tmp_path / out)
        assert {r["executor"]["gpu"] for r in records if r["device"] == "cuda"} == {0, 1}
        assert {r["executor"]["shared_gpu"] for r in records if r["device"] == "cuda"} == {cells_per_gpu > 1}


def test_sigterm_ends_a_cell_that_cannot_checkpoint(tmp_path, monkeypatch):
    """Only a checkpointing training loop defers SIGTERM; any other cell is not kept alive by the handler."""
    import threading

    monkeypatch.setenv("CTBENCH_TEST_SLOW_S", "30")
    config = load_executor_config(None, {"executor": "local", "local.jobs": 1})

    def terminate_when_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for marker in (tmp_path / "cells").glob("*.running.json"):
                pid = json.loads(marker.read_text())["pid"]
                time.sleep(0.5)
                os.kill(pid, signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=terminate_when_running, daemon=True).start()
    started = time.monotonic()
    Coordinator(config, tmp_path, "term").run([_cell("proc-slow")])
    (record,) = read_records(tmp_path)
    assert record["status"] == "error" and "SIGTERM (signal 15)" in record["reason"]
    assert time.monotonic() - started < 25


def test_an_orphaned_worker_past_its_hard_limit_is_killed_and_recorded_as_a_timeout(tmp_path):
    """Its controller is gone (never started here), so the coordinator enforces the limit itself."""
    from suite.executors.exchange import running_marker, write_json_atomic
    from suite.executors.jobs import LocalJobs
    from suite.lock import process_start

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        jobs = LocalJobs(tmp_path, load_executor_config(None, {"executor": "local"}))
        dead_controller = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_controller.wait()
        entry = {"cell_id": "c", "submission": "s1", "job_id": str(dead_controller.pid), "host": this_host(),
                 "folder": str(jobs.folder), "hard_limit_s": 3600.0, "timeout_s": 3540.0}
        marker = {"cell_id": "c", "submission": "s1", "pid": worker.pid, "pid_start": process_start(worker.pid),
                  "host": this_host(), "started_at": now_iso(), "attempt": 1}
        write_json_atomic(running_marker(tmp_path, "c"), marker)
        assert jobs.state(entry) == "running"  # within its limit: adopted, not judged
        write_json_atomic(running_marker(tmp_path, "c"), {**marker, "pid_start": "1"})
        assert jobs.state(entry) == "ended"  # another process now has that pid: not our worker
        write_json_atomic(running_marker(tmp_path, "c"), marker)
        assert jobs.state({**entry, "hard_limit_s": 0.0}) == "ended"
        assert worker.wait(timeout=30) == -signal.SIGKILL
        ended = jobs.ended({**entry, "hard_limit_s": 0.0})
        assert ended.status == "timeout" and "hard limit" in ended.reason
    finally:
        worker.kill()


@pytest.mark.slow  # real processes, ~15-20 s: in CI's slow step (.ci/run)
def test_what_a_cell_started_dies_with_it(tmp_path, monkeypatch):
    """A cell that started a child process and hangs is killed at its hard limit, and so is the child: the
    worker leads its own process group, which the controller kills."""
    from suite.lock import process_start, same_process_alive

    child_file = tmp_path / "child.pid"
    monkeypatch.setenv("CTBENCH_TEST_CHILD", str(child_file))
    config = load_executor_config(None, {"executor": "local", "timeout_grace_s": 1.0})
    summary = Coordinator(config, tmp_path / "run", "spawn").run([_cell("proc-spawn", timeout_s=10.0)])
    assert summary.counts == {"timeout": 1}
    child = int(child_file.read_text())
    deadline = time.monotonic() + 30
    while same_process_alive(child, process_start(child)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not same_process_alive(child, process_start(child)), "the cell's child outlived it"


@pytest.mark.slow  # real processes, ~15-20 s: in CI's slow step (.ci/run)
def test_ctrl_c_under_the_local_executor_is_one_message_and_exit_130(tmp_path):
    """SIGINT to the whole foreground process group, as a terminal's Ctrl-C: coordinator and controllers get
    it; the run says so once, with the resume command, and no controller prints a traceback."""
    cmd = [sys.executable, "-m", "suite", "run", "--spec", str(DATA / "executor-stiff.toml"), "--executor", "local",
           "--jobs", "2", "--out", "run"]
    run = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "CTBENCH_TEST_HOLD": str(tmp_path / "never")},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _workers_inside_their_cells(tmp_path / "run", 2)
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted:" in err and "--resume" in err


@pytest.mark.slow  # real processes, ~15-20 s: in CI's slow step (.ci/run)
def test_a_full_disk_under_the_local_executor_keeps_the_record_and_says_how_to_resume(tmp_path, monkeypatch,
                                                                                     capsys):
    """The worker cannot write its record: it saves it to the temp folder and says where; the cell is recorded
    with that reason. The coordinator cannot write records.jsonl: one message, exit 2, the resume command."""
    from suite.cli import main
    from suite.records import RecordStore as Store
    from suite.records import RecordsWriteError

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("CTBENCH_TEST_ENOSPC", "1")
    config = load_executor_config(None, {"executor": "local"})
    Coordinator(config, tmp_path / "run", "full").run([_cell("proc-ok")])
    (record,) = read_records(tmp_path / "run")
    assert record["status"] == "error" and "could not write its record" in record["reason"]
    assert "saved to" in (record["traceback"] or "")
    (saved,) = read_records(tmp_path / "ctbench-unsaved-full.jsonl")
    assert saved["status"] == "ok" and saved["cell_id"] == record["cell_id"]  # the computed result is kept
    monkeypatch.delenv("CTBENCH_TEST_ENOSPC")

    def full(self, record):
        raise RecordsWriteError(28, f"cannot write a record to {self.path}: No space left on device")

    monkeypatch.setattr(Store, "append", full)
    code = main(["run", "--spec", str(DATA / "executor-stiff.toml"), "--executor", "local", "--out",
                 str(tmp_path / "run2")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "No space left on device" in err and "--resume" in err and "likely a bug" not in err
    assert "Traceback" not in err
