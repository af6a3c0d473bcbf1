"""The SLURM executor against a real one-node SLURM: slurmctld, slurmd, slurmdbd with MariaDB (so sacct answers
from real accounting) and munge, started by `nox -s slurm` (tests/real_slurm/cluster.py), which sets SLURM_CONF.

What one node cannot produce (PREEMPTED, NODE_FAIL, BOOT_FAIL) stays with the stand-ins of tests/test_slurm.py.
Every wait is bounded by a generous deadline, never timed: on a loaded machine the tests only take longer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite.executors.exchange import Manifest
from suite.records import read_records

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
TIME_KEYS = ("time", "_s", "mem")



def _slurm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done


@pytest.fixture(scope="module")
def cluster():
    """The running cluster (`nox -s slurm`), and job processes that find the stub backends and this checkout."""
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        pytest.skip("no real SLURM cluster: `nox -s slurm` starts one and runs these tests against it")
    nodes = _slurm("sinfo", "-h", "-N", "-o", "%T", check=False)
    if nodes.returncode != 0 or not {"idle", "mixed", "allocated"} & set(nodes.stdout.split()):
        pytest.fail(f"SLURM_CONF={conf} is set, but its node is not up: sinfo says "
                    f"{(nodes.stdout or nodes.stderr).strip()!r}")
    old = {k: os.environ.get(k) for k in ("CTBENCH_PLUGINS", "PYTHONPATH", "COLUMNS")}
    os.environ["CTBENCH_PLUGINS"] = "tests.process_stubs"  # sbatch exports this environment to every job
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), old["PYTHONPATH"]]))
    os.environ["COLUMNS"] = "300"  # `ctbench status` tables keep whole cell ids and job ids
    yield conf
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _executor_config(folder: Path, **slurm: object) -> Path:
    """One CPU per job (two jobs side by side on this node), time limits exactly as derived, no margin."""
    settings = {"partition": "debug", "cpus_per_task": 1, "max_parallel": 2, "signal_delay_s": 10,
                "time_margin_min": 0, **slurm}
    lines = ['executor = "slurm"', "timeout_grace_s = 0", "[slurm]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    path = folder / "executor.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _ctbench(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "suite", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"ctbench {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def _wait(what: str, ready, timeout_s: float = 240.0, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _sacct_state(job_id: str) -> str:
    """The job's state as sacct prints it (the allocation's line, not its steps)."""
    lines = _slurm("sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State").stdout.splitlines()
    states = [line.split("|")[1] for line in lines if line.split("|")[0] == job_id]
    return states[0].split()[0] if states else ""


def _jobs(run: Path) -> dict[str, str]:
    """cell id → SLURM job id, from the run's manifest."""
    return {cell: entry["job_id"] for cell, entry in Manifest(run).latest_by_cell().items()}


def _status_summary(run: Path) -> str:
    return _ctbench("status", str(run), cwd=run.parent).stdout.strip().splitlines()[-1]


def _wait_until_merged(run: Path, cells: int) -> list[dict]:
    def merged():
        _ctbench("collect", str(run), cwd=run.parent)
        records = read_records(run / "records.jsonl") if (run / "records.jsonl").exists() else []
        return records if len(records) >= cells else None

    return _wait(f"{cells} record(s) in {run}", merged, every_s=2.0)


def _science(record: dict) -> dict:
    return {k: v for k, v in record["metrics"].items() if not any(t in k for t in TIME_KEYS)}


MATRIX = ("--task", "stiff-rk4", "--variant", "published", "--backend", "engine", "--backend", "torchdiffeq",
          "--precision", "fp32", "--precision", "fp16", "--scaling", "none", "--scaling", "dynamic")


def test_a_matrix_through_slurm_equals_the_in_process_records(cluster, tmp_path):
    config = _executor_config(tmp_path)
    submitted = _ctbench("run", *MATRIX, "--executor-config", str(config), "--out", "slurm", cwd=tmp_path)
    assert "SLURM job" in submitted.stderr, submitted.stderr
    _ctbench("run", *MATRIX, "--out", "inprocess", cwd=tmp_path)
    expected = {r["cell_id"]: r for r in read_records(tmp_path / "inprocess" / "records.jsonl")}
    assert len(expected) == 6
    got = {r["cell_id"]: r for r in _wait_until_merged(tmp_path / "slurm", len(expected))}
    assert got.keys() == expected.keys()
    jobs = _jobs(tmp_path / "slurm")
    for cell_id, record in got.items():
        assert record["status"] == expected[cell_id]["status"] == "ok", record["reason"]
        assert _science(record) == _science(expected[cell_id]), cell_id
        assert record["executor"]["kind"] == "slurm" and record["executor"]["job_id"] == jobs[cell_id]
        # the record is written before the job ends (submitit still pickles its result): wait for sacct
        _wait(f"job {jobs[cell_id]} COMPLETED in sacct", lambda job=jobs[cell_id]: _sacct_state(job) == "COMPLETED")
    assert _status_summary(tmp_path / "slurm") == "6 done: ok"


def test_a_requeued_training_cell_resumes_to_the_uninterrupted_record(cluster, tmp_path):
    """`scontrol requeue` mid-run: SLURM's SIGTERM makes the cell checkpoint and exit (it does not requeue
    itself), SLURM runs the job again, and the second attempt continues from the checkpoint."""
    spec = str(DATA / "executor-cnf.toml")
    config = _executor_config(tmp_path)
    _ctbench("run", "--spec", spec, "--out", "straight", cwd=tmp_path)  # first: the job takes seconds
    _ctbench("run", "--spec", spec, "--executor-config", str(config), "--out", "run", "--checkpoint-every", "10",
             cwd=tmp_path)
    run = tmp_path / "run"
    (job_id,) = _jobs(run).values()
    # the cell runs for seconds: requeue it at once, and ask `ctbench status` only then
    _wait("the cell's first checkpoint", lambda: list((run / "checkpoints").glob("*.pt")), every_s=0.1)
    _slurm("scontrol", "requeue", job_id)
    _wait("SLURM to take the job back", lambda: _sacct_state(job_id) in ("PENDING", "REQUEUED"))
    assert _status_summary(run) in ("1 queued", "1 running")  # pending until its old credential expired
    (record,) = _wait_until_merged(run, 1)
    (reference,) = read_records(tmp_path / "straight" / "records.jsonl")
    assert record["status"] == "ok", record["reason"]
    assert record["executor"]["attempt"] == 2, record["executor"]
    assert record["extra"]["checkpoint"]["restores"] == 1
    assert _science(record) == _science(reference)
    _wait(f"job {job_id} COMPLETED in sacct", lambda: _sacct_state(job_id) == "COMPLETED")
    restarts = _slurm("scontrol", "show", "job", job_id, check=False).stdout
    assert "Restarts=1" in restarts or not restarts, restarts  # gone from slurmctld after MinJobAge
    assert not list((run / "checkpoints").glob("*.pt"))


def test_scancel_and_the_time_limit_end_each_with_its_status(cluster, tmp_path):
    """A training cell cancelled mid-run stays cancelled (its SIGTERM checkpoints, and nothing requeues it); a hung
    cell (the stub backend sleeps through every deadline and SLURM's USR2 warning) is killed by SLURM at its
    one-minute time limit. `ctbench status` and `collect` read both endings from sacct."""
    hang = tmp_path / "hang.toml"
    hang.write_text((DATA / "executor-stiff.toml").read_text().replace('backend = ["proc-slow"]',
                                                                      'backend = ["proc-hang"]')
                    .replace("seed = [0, 1, 2, 3]", "seed = [0]").replace("timeout_s = 120", "timeout_s = 1"))
    config = _executor_config(tmp_path)
    _ctbench("run", "--spec", str(hang), "--executor-config", str(config), "--out", "limit", cwd=tmp_path)
    _ctbench("run", "--spec", str(DATA / "executor-cnf.toml"), "--executor-config", str(config), "--out", "cancel",
             "--checkpoint-every", "10", cwd=tmp_path)
    limit, cancel = tmp_path / "limit", tmp_path / "cancel"
    (script,) = (limit / "jobs" / "slurm").glob("*_submission.sh")
    assert "#SBATCH --time=1\n" in script.read_text()  # timeout_s 1 s, no grace, no margin: one minute
    (limit_job,), (cancel_job,) = _jobs(limit).values(), _jobs(cancel).values()

    _wait("the training cell's first checkpoint", lambda: list((cancel / "checkpoints").glob("*.pt")), every_s=0.1)
    _slurm("scancel", cancel_job)  # at once: the cell runs for seconds
    _wait("the cancellation in sacct", lambda: _sacct_state(cancel_job) == "CANCELLED")
    (cancelled,) = _wait_until_merged(cancel, 1)
    assert cancelled["status"] == "error"
    assert f"the job was cancelled [SLURM CANCELLED, job {cancel_job}]" in cancelled["reason"]
    assert _status_summary(cancel) == "1 done: error"

    _wait("the hung cell running", lambda: _sacct_state(limit_job) == "RUNNING")
    assert _status_summary(limit) == "1 running"
    _wait("the time limit in sacct", lambda: _sacct_state(limit_job) == "TIMEOUT", timeout_s=300, every_s=2.0)
    (timed_out,) = _wait_until_merged(limit, 1)
    assert timed_out["status"] == "timeout", timed_out["reason"]
    assert "SLURM killed the job at its time limit" in timed_out["reason"]
    assert f"[SLURM TIMEOUT, job {limit_job}]" in timed_out["reason"]
    assert _status_summary(limit) == "1 done: timeout"
    # a minute later, the cancelled job was not brought back (its cell's SIGTERM handler requeues nothing)
    assert _sacct_state(cancel_job) == "CANCELLED"
    assert [r["status"] for r in read_records(cancel / "records.jsonl")] == ["error"]
    assert not list((cancel / "cells").glob("*.record.json"))
