"""Small promises of issue 21: records name their executor, collect leaves nothing in a folder that is not a
run, a job's stderr kept in a record is capped, local workers honour the user's thread setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from stubs import cell, stubs  # noqa: F401 — the fixture

from suite.cli import main
from suite.executors import load_executor_config
from suite.executors.coordinator import Coordinator
from suite.executors.inprocess import run_cells
from suite.executors.jobs import TAIL_CAP, cap_text
from suite.records import read_records


def test_in_process_records_name_their_executor(tmp_path, stubs):  # noqa: F811
    run_cells([cell("stub-ok")], tmp_path, "r")
    (record,) = read_records(tmp_path)
    assert record["executor"] == {"kind": "inprocess"}


def test_collect_refuses_a_folder_that_is_not_a_run_and_leaves_no_lock(tmp_path, capsys):
    assert main(["collect", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_kept_stderr_tail_is_capped_with_its_head_its_tail_and_the_size_cut():
    text = "H" * 100_000 + "T" * 100_000
    capped = cap_text(text)
    assert len(capped) < TAIL_CAP + 100 and capped.startswith("H") and capped.endswith("T")
    assert f"[... {200_000 - TAIL_CAP} characters cut ...]" in capped
    assert cap_text("short") == "short"


def test_local_workers_take_threads_from_the_flag_then_omp_num_threads(tmp_path, monkeypatch, capsys):
    def threads(**settings) -> int:
        config = load_executor_config(None, {"executor": "local", "local.jobs": 2, **settings})
        return Coordinator(config, tmp_path, "r")._threads()

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads() == 3
    assert threads(**{"local.threads_per_cell": 5}) == 5
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads() >= 1
    spec = str(Path(__file__).parent / "data" / "executor-stiff.toml")
    assert main(["run", "--spec", spec, "--threads", "2", "--out", str(tmp_path / "x")]) == 2
    assert "--threads are settings of --executor local" in capsys.readouterr().err


def test_garbage_in_a_manifest_and_a_dangling_link_in_cells_are_warnings_not_crashes(tmp_path, capsys):
    jobs, cells = tmp_path / "jobs", tmp_path / "cells"
    jobs.mkdir()
    cells.mkdir()
    (jobs / "manifest.jsonl").write_text('null\n{}\n[1, 2]\n"text"\n{"cell_id": 3}\n')
    (tmp_path / "records.jsonl").write_text("")  # a run that has recorded nothing yet
    (cells / "gone.abc.record.json").symlink_to(tmp_path / "nowhere.json")
    assert main(["collect", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "not a submission entry" in err and "cannot be read" in err and "likely a bug" not in err
    assert main(["status", str(tmp_path)]) == 2  # nothing usable in it: said so, in one line
    err = capsys.readouterr().err
    assert "not a submission entry" in err and "not a ctbench run directory" in err and "likely a bug" not in err


def test_exit_codes_mean_one_thing_each(tmp_path, monkeypatch, capsys):
    """0 success, 1 a failure found, 2 a user or environment error, 3 an internal bug (and only that)."""
    import errno

    import suite.cli.jobs as jobs_command
    from suite.cli import catalog

    assert main(["list"]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("task = 'stiff-rk4'\n")
    assert main(["validate", str(bad)]) == 1  # validation ran and found the spec invalid
    assert main(["run", "--task", "no-such-task"]) == 2
    (tmp_path / "records.jsonl").write_text("")

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system", str(tmp_path / ".ctbench.lock"))

    monkeypatch.setattr("suite.lock.RunLock.acquire", read_only)
    capsys.readouterr()
    assert main(["collect", str(tmp_path)]) == 2  # a read-only run directory: the machine's answer, one line
    err = capsys.readouterr().err
    assert "Read-only file system" in err and "likely a bug" not in err
    monkeypatch.setattr(jobs_command, "reconcile", lambda *a, **k: 1 / 0)
    monkeypatch.setattr("suite.lock.RunLock.acquire", lambda self: None)
    assert main(["collect", str(tmp_path)]) == 3  # an internal error, said to be one
    assert "likely a bug" in capsys.readouterr().err
    monkeypatch.setattr(catalog, "cmd_list", lambda args: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["list"]) == 130


def test_a_training_cell_reports_its_iteration_and_last_validation_and_status_shows_them(tmp_path):
    from suite.cell import run_cell
    from suite.executors.exchange import RunningMarker, now_iso, running_marker, this_host, write_plan
    from suite.executors.status import run_status
    from suite.spec import expand, load_spec

    spec = load_spec(Path(__file__).parent / "data" / "executor-cnf.toml")
    (cell_,) = expand(spec, "smoke")
    cell_ = dataclasses.replace(cell_, params=cell_.params.model_copy(update={"iterations": 12}))
    seen: list[dict] = []
    outcome = run_cell(cell_, on_detail=seen.append)
    assert outcome["status"] == "ok", outcome["reason"]
    assert [d["iteration"] for d in seen] == list(range(1, 13)) and seen[-1]["iterations"] == 12
    assert isinstance(seen[-1]["validation"], float)  # the last evaluation's number
    # what the running marker keeps of it, and how `ctbench status` shows an in-process cell
    import os

    write_plan(tmp_path, "r", "inprocess", [cell_.cell_id])
    marker = RunningMarker(running_marker(tmp_path, cell_.cell_id), {
        "cell_id": cell_.cell_id, "pid": os.getpid(), "host": this_host(), "started_at": now_iso()})
    marker.detail({"iteration": 120, "iterations": 400, "validation": 2.3141})
    marker.write(0.27, force=True)
    (row,) = run_status(tmp_path)
    assert row.state == "running" and "iteration 120/400, validation 2.314" in row.detail and "27%" in row.detail


def test_a_checkpoint_of_the_wrong_type_is_discarded_with_a_warning(tmp_path):
    import pytest
    import torch

    from suite.checkpoint import CheckpointPolicy

    path = tmp_path / "c.pt"
    for wrong in ([1, 2, 3], torch.zeros(2), "text"):
        torch.save(wrong, path)
        policy = CheckpointPolicy(path=path, every=1, identity={"cell_id": "c"})
        with pytest.warns(UserWarning, match="not a ctbench checkpoint"):
            assert policy.load() is None
        assert not path.exists()
