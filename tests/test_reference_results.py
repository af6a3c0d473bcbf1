"""The committed reference run (results/reference-cpu): its records parse, every one names a cell of the
current specs' reference profile with the same spec hash (a spec edited after the run shows up here), a
task present is present whole, and the report rebuilds from them. Nothing is re-run."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from suite.records import read_records
from suite.report import build_report
from suite.spec import expand, spec_files, specs_for_tasks

RUN = Path(__file__).resolve().parent.parent / "results" / "reference-cpu"


@pytest.fixture(scope="module")
def records():
    assert (RUN / "records.jsonl").is_file(), f"{RUN}/records.jsonl is missing: the reference run is not committed"
    return read_records(RUN)


@pytest.fixture(scope="module")
def reference_cells():
    specs = specs_for_tasks(spec_files(), None)
    return {cell.cell_id: cell for spec in specs.values() for cell in expand(spec, "reference")}


def test_every_record_is_a_current_reference_cell(records, reference_cells):
    assert records
    for record in records:
        assert record["profile"] == "reference" and record["device"] == "cpu"
        cell = reference_cells.get(record["cell_id"])
        assert cell is not None, f"{record['cell_id']} is not a cell of the current reference profile"
        assert record["spec_hash"] == cell.spec_hash, f"{record['cell_id']}: its spec changed since it ran"
        assert not (record.get("env") or {}).get("dirty"), f"{record['cell_id']} ran from a dirty checkout"


def test_a_committed_task_is_committed_whole(records, reference_cells):
    done = defaultdict(set)
    for record in records:
        done[record["task"]].add(record["cell_id"])
    for task, ids in done.items():
        expected = {cid for cid, cell in reference_cells.items() if cell.task == task}
        assert ids == expected, f"{task}: missing {sorted(expected - ids)[:3]}"


def test_no_claim_row_ended_in_error(records):
    errors = [r["cell_id"] for r in records if r["status"] == "error"]
    assert not errors, f"reference cells that ended in error (a bug, not a finding): {errors}"


def test_the_report_rebuilds_from_the_committed_records(records, tmp_path):
    files = build_report(RUN, tmp_path / "rep")
    index = (tmp_path / "rep" / "index.md").read_text()
    for task in {r["task"] for r in records}:
        assert f"## {task}" in index
    assert any(p.suffix == ".png" for p in files.files)
