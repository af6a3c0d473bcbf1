"""The SLURM path without a cluster (tests/fake_slurm.py stands in for sbatch, srun, sacct): the submission
script submitit writes for ctbench's settings, job arrays, sacct state → cell status, records of jobs that
ended without one, and one end-to-end run whose array tasks really execute in SLURM's job environment."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import submitit

from suite.executors import ExecutorConfigError, load_executor_config
from suite.executors.coordinator import Coordinator
from suite.executors.exchange import Manifest
from suite.executors.reconcile import reconcile
from suite.executors.status import run_status
from suite.records import read_records
from suite.spec import Cell
from suite.tasks.stiff_rk4 import StiffParams
from tests import fake_slurm

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """Fake SLURM commands first on PATH; stub backends importable by job processes."""
    bin_dir = fake_slurm.install(tmp_path / "slurm")
    monkeypatch.setenv("PATH", fake_slurm.path_with(bin_dir))
    monkeypatch.setenv("CTBENCH_PLUGINS", "tests.process_stubs")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    import tests.process_stubs  # noqa: F401

    submitit.SlurmJob.watcher.clear()
    yield tmp_path / "slurm"
    submitit.SlurmJob.watcher.clear()


def _cell(backend: str = "proc-ok", seed: int = 0, device: str = "cpu", timeout_s: float | None = 120.0) -> Cell:
    return Cell(task="stiff-rk4", variant="published", backend=backend, method="rk4", steps=39, precision="fp32",
                scaling="none", seed=seed, profile="smoke", device=device, params=StiffParams(repeats=1),
                spec_hash="t", timeout_s=timeout_s)


def _config(**overrides):
    base = {"executor": "slurm", "slurm.partition": "gpu", "slurm.max_parallel": 3,
            "slurm.setup": ["module load cuda/12.4"], "timeout_grace_s": 60.0}
    return load_executor_config(None, {**base, **overrides})


def _scripts(root: Path) -> list[str]:
    return [p.read_text() for p in sorted((root / "scripts").glob("*.sh"))]


def test_cells_become_job_arrays_with_the_profile_time_limit_and_requeue(slurm, tmp_path):
    cells = [_cell(seed=s) for s in range(4)] + [_cell(seed=9, device="cuda", timeout_s=7200.0)]
    summary = Coordinator(_config(), tmp_path / "run", "r").run(cells)
    assert summary.counts["submitted"] == 5
    cpu, gpu = sorted(_scripts(slurm), key=lambda text: "--gpus-per-task" in text)
    # four CPU cells: one array, at most 3 at once; time = ceil((120 s + 60 s grace) / 60) + 5 min margin
    for line in ("--array=0-3%3", "--partition=gpu", "--time=8", "--requeue", "--signal=USR2@120",
                 "--cpus-per-task=8", "--open-mode=append"):
        assert f"#SBATCH {line}\n" in cpu, line
    assert "--gpus-per-task" not in cpu and "module load cuda/12.4" in cpu
    # a CUDA cell (not judged on this GPU-less login node): its own job with a GPU and the paper's limit
    assert "#SBATCH --gpus-per-task=1\n" in gpu and "#SBATCH --time=126\n" in gpu and "--array" not in gpu
    entries = Manifest(tmp_path / "run").entries()
    assert sorted(e["job_id"] for e in entries) == ["4200_0", "4200_1", "4200_2", "4200_3", "4201"]
    assert all(e["hard_limit_s"] == e["timeout_s"] + 60.0 for e in entries)


def test_gpus_can_be_asked_for_as_gres(slurm, tmp_path):
    Coordinator(_config(**{"slurm.gres": "gpu:h100:1"}), tmp_path / "run", "r").run([_cell(device="cuda")])
    (script,) = _scripts(slurm)
    assert "#SBATCH --gres=gpu:h100:1\n" in script and "--gpus-per-task" not in script


def test_sacct_states_map_to_cell_status_and_failure_records(slurm, tmp_path):
    out = tmp_path / "run"
    Coordinator(_config(), out, "r").run([_cell(seed=s) for s in range(5)])
    fake_slurm.set_states(slurm, {"4200_0": "PENDING", "4200_1": "RUNNING", "4200_2": "TIMEOUT",
                                  "4200_3": "OUT_OF_MEMORY", "4200_4": "CANCELLED by 1234"})
    states = {row.cell_id.split("/")[7]: row.state for row in run_status(out)}
    assert states == {"seed=0": "queued", "seed=1": "running", "seed=2": "ended", "seed=3": "ended",
                      "seed=4": "ended"}
    submitit.SlurmJob.watcher.clear()
    result = reconcile(out, _config())
    assert sorted(result.in_flight) == sorted(c.cell_id for c in [_cell(seed=0), _cell(seed=1)])
    recorded = {r["seed"]: r for r in read_records(out)}
    assert recorded[2]["status"] == "timeout" and "SLURM TIMEOUT, job 4200_2" in recorded[2]["reason"]
    assert recorded[3]["status"] == "oom"
    assert recorded[4]["status"] == "error" and "cancelled" in recorded[4]["reason"]
    assert set(recorded) == {2, 3, 4}
    submitit.SlurmJob.watcher.clear()
    assert reconcile(out, _config()).merged == []  # judged once


def test_array_tasks_run_in_slurms_job_environment_end_to_end(slurm, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_RUN", "1")
    out = tmp_path / "run"
    cells = [_cell(seed=0), _cell(seed=1), _cell("proc-exit", seed=2)]
    Coordinator(_config(), out, "r").run(cells)  # returns at once: the jobs run on
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        submitit.SlurmJob.watcher.clear()
        if not any(row.state in ("queued", "running") for row in run_status(out)):
            break
        time.sleep(0.5)
    submitit.SlurmJob.watcher.clear()
    result = reconcile(out, _config())
    assert result.in_flight == {}
    records = {r["seed"]: r for r in read_records(out)}
    assert records[0]["status"] == records[1]["status"] == "ok"
    assert records[0]["executor"]["kind"] == "slurm" and records[0]["executor"]["job_id"] == "4200_0"
    assert records[2]["status"] == "error" and "SLURM FAILED, job 4200_2" in records[2]["reason"]
    assert "done: ok" in {row.label for row in run_status(out)}


def test_resume_on_a_login_node_keeps_gpu_records_and_skips_jobs_in_flight(slurm, tmp_path):
    out = tmp_path / "run"
    cells = [_cell(seed=0), _cell(seed=1)]
    Coordinator(_config(), out, "r").run(cells)
    fake_slurm.set_states(slurm, {"4200_0": "RUNNING", "4200_1": "FAILED"})
    submitit.SlurmJob.watcher.clear()
    summary = Coordinator(_config(), out, "r").run(cells, resume=True)
    assert summary.counts["submitted"] == 1  # the failed one again; the running one is left alone
    assert [e["job_id"] for e in Manifest(out).entries()][-1] == "4201"


def test_executor_settings_file_is_strict(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text('executor = "slurm"\n[slurm]\npartition = "gpu"\nmax_paralel = 4\n')
    with pytest.raises(ExecutorConfigError, match=r"slurm.max_paralel: Extra inputs are not permitted"):
        load_executor_config(path, {})
    path.write_text('executor = "slurm"\n[slurm]\nmax_parallel = "4"\n')
    with pytest.raises(ExecutorConfigError, match=r"slurm.max_parallel: Input should be a valid integer"):
        load_executor_config(path, {})
    path.write_text('executor = "kubernetes"\n')
    with pytest.raises(ExecutorConfigError, match="executor: Input should be 'inprocess', 'local' or 'slurm'"):
        load_executor_config(path, {})
    path.write_text('executor = "slurm"\ncheckpoint_every = 10\n[slurm]\npartition = "a100"\n')
    config = load_executor_config(path, {"slurm.partition": "h100"})  # flags override the file
    assert config.slurm.partition == "h100" and config.checkpoint_every == 10


def test_cli_errors_name_the_bad_executor_flag(tmp_path, monkeypatch):
    from suite.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["run", "--task", "stiff-rk4", "--jobs", "2", "--out", "x"]) == 2
    assert main(["run", "--task", "stiff-rk4", "--executor", "local", "--slurm-partition", "gpu", "--out", "x"]) == 2
    assert main(["run", "--task", "stiff-rk4", "--executor", "local", "--gpus", "0,a", "--out", "x"]) == 2
    assert main(["run", "--task", "stiff-rk4", "--executor", "slurm", "--out", "x"]) == 2  # no srun here
    assert main(["run", "--task", "stiff-rk4", "--executor-config", "missing.toml", "--out", "x"]) == 2
    assert main(["status", "nowhere"]) == 2


def test_slurm_missing_message(tmp_path, monkeypatch, capsys):
    from suite.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    main(["run", "--task", "stiff-rk4", "--executor", "slurm", "--out", "x"])
    err = capsys.readouterr().err
    assert re.search(r"--executor slurm needs SLURM's commands \(srun, sbatch, sacct\) on PATH", err), err



def test_in_process_resume_refuses_while_jobs_of_the_run_still_run(slurm, tmp_path):
    from suite.executors.inprocess import RunStoreError, run_cells

    out = tmp_path / "run"
    cells = [_cell(seed=0), _cell(seed=1)]
    Coordinator(_config(), out, "r").run(cells)
    fake_slurm.set_states(slurm, {"4200_0": "RUNNING", "4200_1": "TIMEOUT"})
    submitit.SlurmJob.watcher.clear()
    with pytest.raises(RunStoreError, match=r"seed=0/smoke is still running in slurm job 4200_0; resume with "
                                            r"--executor slurm"):
        run_cells(cells, out, "r", resume=True)
    assert [r["status"] for r in read_records(out)] == ["timeout"]  # what had ended was merged first


def test_the_readme_cluster_example_is_a_valid_executor_config(slurm, tmp_path):
    text = (ROOT / "README.md").read_text()
    start = text.index("    # cluster.toml")
    block = text[start: text.index("\n\n", start)]
    path = tmp_path / "cluster.toml"
    path.write_text("\n".join(line[4:] for line in block.splitlines()) + "\n")
    config = load_executor_config(path, {})
    assert config.executor == "slurm" and config.slurm.partition == "gpu" and config.slurm.max_parallel == 16
    Coordinator(config, tmp_path / "run", "r").run([_cell(device="cuda")])
    (script,) = _scripts(slurm)
    assert "#SBATCH --exclusive\n" in script and "#SBATCH --mem=65536M\n" in script


def test_a_rejected_submission_is_one_user_error_and_leaves_no_plan(slurm, tmp_path, monkeypatch, capsys):
    from suite.cli import main

    monkeypatch.setenv("FAKE_SLURM_REJECT", "1")
    out = tmp_path / "run"
    code = main(["run", "--spec", str(ROOT / "tests" / "data" / "executor-stiff.toml"), "--executor", "slurm",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "sbatch refused the job array of 4 cpu cell(s): sbatch: error: Batch job submission failed" in err
    assert "likely a bug" not in err and "Traceback" not in err
    assert not (out / "jobs" / "plan.json").exists()
