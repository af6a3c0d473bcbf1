"""Small promises of issue 21: records name their executor, collect leaves nothing in a folder that is not a
run, a job's stderr kept in a record is capped, local workers honour the user's thread setting."""

from __future__ import annotations

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
