"""Runner bookkeeping: fault injection → the right statuses, the run goes on, resume, truncated records."""

from __future__ import annotations

import json

import pytest
import torch
from stubs import cell

from suite.cli import main
from suite.executors.inprocess import run_cells
from suite.records import RecordsError, RecordStore, read_records


def test_faults_become_statuses_and_the_run_goes_on(tmp_path, stubs):
    cells = [
        cell("stub-raise"), cell("stub-nan"), cell("stub-oom"), cell("stub-ok"),
        cell("stub-ok", scaling="dynamic"),  # the stub does not support dynamic → unsupported
        cell("stub-slow", timeout_s=0.1, repeats=3),
        cell("engine", precision="fp16", scaling="dynamic"),
    ]
    summary = run_cells(cells, tmp_path, "run-test")
    records = {r["backend"] + "/" + r["scaling"]: r for r in read_records(tmp_path)}
    assert len(records) == len(cells)  # every cell recorded, in spite of the failures
    assert records["stub-raise/none"]["status"] == "error"
    assert "injected failure in the solver" in records["stub-raise/none"]["reason"]
    assert "RuntimeError" in records["stub-raise/none"]["traceback"]
    assert records["stub-nan/none"]["status"] == "nonfinite"
    assert records["stub-oom/none"]["status"] == "oom"
    assert records["stub-ok/none"]["status"] == "ok"
    assert records["stub-ok/dynamic"]["status"] == "unsupported"
    assert "does not support scaling 'dynamic'" in records["stub-ok/dynamic"]["reason"]
    assert records["stub-slow/none"]["status"] == "timeout"
    assert records["engine/dynamic"]["status"] == "ok"
    assert summary.n_errors == 1
    for r in records.values():
        for key in ("schema", "run_id", "task", "variant", "backend", "method", "steps", "precision", "scaling",
                    "seed", "profile", "device", "status", "reason", "metrics", "timing", "memory", "env",
                    "spec_hash"):
            assert key in r
        assert r["env"]["torch"] == torch.__version__ and "git_sha" in r["env"]


def test_unsupported_costs_no_compute(tmp_path, stubs):
    solver_cls = stubs["ok"].solver_cls
    run_cells([cell("stub-ok", scaling="dynamic"), cell("stub-ok", precision="bf16")], tmp_path, "r")
    assert solver_cls.calls == 0
    assert [r["status"] for r in read_records(tmp_path)] == ["unsupported", "unsupported"]


def test_resume_skips_ok_cells_and_reruns_the_rest(tmp_path, stubs):
    cells = [cell("stub-ok"), cell("stub-raise"), cell("stub-ok", precision="fp16")]
    run_cells(cells, tmp_path, "r")
    # Simulate a run killed while writing the last record.
    path = tmp_path / "records.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) - 40])
    with pytest.warns(UserWarning, match="skipping the last line"):
        assert len(read_records(tmp_path)) == 2
    ok_calls = stubs["ok"].solver_cls.calls
    with pytest.warns(UserWarning, match="moved it to .*records.jsonl.corrupt"):
        summary = run_cells(cells, tmp_path, "r", resume=True)
    assert summary.skipped == 1  # the fp32 ok cell
    assert stubs["ok"].solver_cls.calls == ok_calls + 1  # only the lost fp16 cell ran again
    records = read_records(tmp_path)
    assert [r["cell_id"] for r in records].count(cells[1].cell_id) == 2  # the error cell was retried
    assert all(json.loads(line) for line in path.read_text().splitlines())
    assert (tmp_path / "records.jsonl.corrupt").read_text().startswith('{"')  # the cut line, kept


def test_reader_refuses_corruption_in_the_middle(tmp_path):
    store = RecordStore(tmp_path / "records.jsonl")
    store.path.write_text('{"schema": 2}\n{not json\n{"schema": 2}\n')
    with pytest.raises(RecordsError, match=r"records.jsonl:1: record lacks required keys"):
        read_records(tmp_path)
    store.path.write_text('garbage\n{"a": 1}\n')
    with pytest.raises(RecordsError, match=r"records.jsonl:1: not JSON"):
        read_records(tmp_path)
    with pytest.raises(RecordsError, match="no records file"):
        read_records(tmp_path / "elsewhere")


def test_cli_run_exit_code_and_bad_flags(tmp_path, stubs, capsys):
    assert main(["run", "--task", "stiff-rk4", "--backend", "nope", "--out", str(tmp_path / "a")]) == 2
    assert "--backend 'nope' is not a known backend; allowed:" in capsys.readouterr().err
    assert main(["run", "--task", "stiff-rk4", "--profile", "huge", "--out", str(tmp_path / "b")]) == 2
    assert "--profile 'huge' is not defined for task stiff-rk4; defined: smoke, paper" in capsys.readouterr().err
    assert main(["run", "--resume"]) == 2


def test_cli_run_refuses_to_mix_runs(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--task", "stiff-rk4", "--backend", "engine", "--precision", "fp32", "--scaling", "none",
            "--out", str(out)]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds records; add --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert len(read_records(out)) == 1  # resumed: the ok cell is not run twice
