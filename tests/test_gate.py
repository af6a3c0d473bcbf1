"""`ctbench compare` / `ctbench gate`: each metric kind by its task's rule, statuses, missing and new cells,
schemas, time ratios that a uniform slowdown does not move, baselines only from committed code, and a
doctored run (an engine whose dynamic scaling is broken) failing against the committed CPU baseline."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from suite.baseline import BaselineError, load_baseline, write_baseline
from suite.cli import main
from suite.cli.gate import compare_records
from suite.records import SCHEMA, RecordStore

ROOT = Path(__file__).resolve().parent.parent


def record(task="stiff-rk4", backend="engine", precision="fp16", scaling="dynamic", status="ok", metrics=None,
           timing=None, device="cpu", device_class="cpu: test", variant="published", dirty=False):
    return {
        "schema": SCHEMA, "run_id": "r",
        "cell_id": f"{task}/{variant}/{backend}/rk4/N=4/{precision}/{scaling}/seed=0/smoke",
        "task": task, "variant": variant, "backend": backend, "method": "rk4", "steps": 4, "precision": precision,
        "scaling": scaling, "seed": 0, "profile": "smoke", "device": device, "status": status,
        "reason": "" if status == "ok" else f"{status} (test)", "metrics": metrics or {}, "timing": timing or {},
        "memory": {}, "env": {"git_sha": "abc", "dirty": dirty, "torch": "t", "python": "3.11"},
        "spec_hash": "h", "inputs": {"device_class": device_class}, "extra": {}, "stats": {},
    }


def verdicts(result):
    return {(r.cell.split("/")[2] + "/" + r.cell.split("/")[5] + "/" + r.cell.split("/")[6], r.metric): r.verdict
            for r in result.rows}


def test_relative_metrics_pass_within_tolerance_and_fail_outside():
    old = [record(metrics={"rel_err_y_T": 1.0e-3, "rel_err_grad_y0": 2.0e-3})]
    within = [record(metrics={"rel_err_y_T": 1.04e-3, "rel_err_grad_y0": 2.0e-3})]
    worse = [record(metrics={"rel_err_y_T": 1.2e-3, "rel_err_grad_y0": 2.0e-3})]
    better = [record(metrics={"rel_err_y_T": 0.5e-3, "rel_err_grad_y0": 2.0e-3})]
    assert not compare_records(old, within).regressions
    bad = compare_records(old, worse).regressions
    assert [(r.metric, r.why) for r in bad] == [("rel_err_y_T", "moved up beyond ±5%")]
    assert verdicts(compare_records(old, better))[("engine/fp16/dynamic", "rel_err_y_T")] == "improvement"
    # a spec's [gate] table overrides the task's tolerance
    assert not compare_records(old, worse, overrides={"stiff-rk4": {"rel_err_y_T": 0.5}}).regressions


def test_higher_is_better_metrics():
    old = [record(task="stl10", metrics={"test_acc": 0.50})]
    assert compare_records(old, [record(task="stl10", metrics={"test_acc": 0.40})]).regressions
    assert not compare_records(old, [record(task="stl10", metrics={"test_acc": 0.60})]).regressions


def test_monte_carlo_metrics_use_a_z_test():
    def mc(value, se):
        return [record(task="sde-adjoint-bias", backend="engine", precision="fp64", scaling="none",
                       metrics={"grad_estimate": value, "grad_stderr": se})]

    assert not compare_records(mc(0.640, 0.01), mc(0.660, 0.01)).regressions  # z ≈ 1.4
    bad = compare_records(mc(0.640, 0.01), mc(0.740, 0.01)).regressions  # z ≈ 7
    assert bad and "standard errors" in bad[0].why


def test_memory_uses_a_tight_factor():
    old = [record(metrics={"saved_for_backward_mib": 10.0})]
    assert not compare_records(old, [record(metrics={"saved_for_backward_mib": 10.4})]).regressions
    assert compare_records(old, [record(metrics={"saved_for_backward_mib": 12.0})]).regressions


def test_status_changes_missing_and_new_cells():
    old = [record(), record(precision="bf16"), record(precision="fp32", status="nonfinite")]
    new = [record(status="nonfinite"), record(precision="fp32"), record(precision="fp64")]
    v = verdicts(compare_records(old, new))
    assert v[("engine/fp16/dynamic", "status")] == "regression"
    assert v[("engine/bf16/dynamic", "cell")] == "regression"  # in the baseline, not in the run
    assert v[("engine/fp32/dynamic", "status")] == "improvement"
    assert v[("engine/fp64/dynamic", "cell")] == "new"


def test_a_task_absent_from_the_run_is_skipped_with_a_note():
    old = [record(), record(task="cnf-2d", metrics={"val_nll": 1.0})]
    result = compare_records(old, [record()])
    assert not result.regressions and any("cnf-2d is not in the run" in n for n in result.notes)


def _timed(backend, precision, scaling, seconds, device_class="cpu: test"):
    return record(backend=backend, precision=precision, scaling=scaling, metrics={"iter_s": seconds},
                  device_class=device_class)


def test_time_ratios_ignore_a_uniform_slowdown_and_catch_a_relative_one():
    base = [_timed("engine", "fp16", "dynamic", 1.0), _timed("torchdiffeq", "fp16", "grad", 1.0),
            _timed("engine", "bf16", "none", 0.8), _timed("engine", "fp32", "none", 1.0)]
    slow = [_timed("engine", "fp16", "dynamic", 2.2), _timed("torchdiffeq", "fp16", "grad", 2.2),
            _timed("engine", "bf16", "none", 1.76), _timed("engine", "fp32", "none", 2.2)]
    result = compare_records(base, slow, time_factor=1.5, absolute_time_factor=10)
    assert not result.regressions  # every ratio is the same: a slower machine, not a slower solver
    engine_only = copy.deepcopy(base)
    engine_only[0]["metrics"]["iter_s"] = 2.0  # the engine alone got twice as slow
    bad = compare_records(base, engine_only, time_factor=1.5, absolute_time_factor=10).regressions
    assert [r.metric for r in bad] == ["time engine ÷ torchdiffeq"]
    # absolute times are compared only on one device class
    other = [dict(r, inputs={"device_class": "cpu: other"}) for r in engine_only]
    result = compare_records(base, other, time_factor=1.5)
    assert not result.regressions and any("different device classes" in n for n in result.notes)


def test_baselines_come_from_committed_code_and_carry_their_schema(tmp_path):
    with pytest.raises(BaselineError, match="measured run of committed code"):
        write_baseline(tmp_path / "b", [record(dirty=True)], None, "test")
    meta = write_baseline(tmp_path / "b", [record(), record(task="cnf-2d")], None, "ctbench gate r --update",
                          force=True)  # these made-up records name no spec file
    assert meta["tasks"] == ["cnf-2d", "stiff-rk4"] and "Measured, never hand-edited" in (
        tmp_path / "b" / "README.md").read_text()
    write_baseline(tmp_path / "b", [record(precision="bf16")], ["stiff-rk4"], "update one task", force=True)
    records, _ = load_baseline(tmp_path / "b")
    assert sorted((r["task"], r["precision"]) for r in records) == [("cnf-2d", "fp16"), ("stiff-rk4", "bf16")]
    meta_path = tmp_path / "b" / "baseline.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "schema": 1}))  # a baseline.json edit
    with pytest.raises(BaselineError, match="schema 1; this ctbench reads schema"):
        load_baseline(tmp_path / "b")


def test_gate_command_exit_codes_markdown_and_a_missing_baseline(tmp_path, capsys):
    run = tmp_path / "run"
    RecordStore(run / "records.jsonl").append(record(metrics={"rel_err_y_T": 1.0}))
    base = tmp_path / "base"
    write_baseline(base, [record(metrics={"rel_err_y_T": 0.5})], None, "test", force=True)
    assert main(["gate", str(run), "--baseline", str(base), "--markdown", str(tmp_path / "g.md")]) == 1
    text = (tmp_path / "g.md").read_text()
    assert "**1 regression(s)**" in text and "rel_err_y_T" in text and "0.5 → 1" in text
    capsys.readouterr()
    assert main(["gate", str(run), "--baseline", str(tmp_path / "nowhere")]) == 2  # never a pass
    assert "no baseline here" in capsys.readouterr().err
    bad = tmp_path / "old-schema"
    RecordStore(bad / "records.jsonl").append({**record(), "schema": 1})
    assert main(["compare", str(bad), str(run)]) == 2
    assert "record schema 1 is not supported" in capsys.readouterr().err


def test_a_doctored_run_fails_the_committed_cpu_baseline(tmp_path, monkeypatch):
    """An engine change that breaks fp16 dynamic scaling (the scale stuck at 1) turns the gate red."""
    from suite.engine import _scaler
    from suite.executors.inprocess import run_cells
    from suite.spec import expand, load_spec

    baseline = ROOT / "baselines" / "cpu-smoke"
    old, _ = load_baseline(baseline)
    spec = load_spec(ROOT / "suite" / "specs" / "stiff-rk4.toml")
    cells = [c for c in expand(spec, "smoke") if c.variant == "published" and c.backend == "engine"
             and c.precision == "fp16"]
    ids = {c.cell_id for c in cells}
    old = [r for r in old if r["cell_id"] in ids]  # gate just these cells
    assert len(old) == len(cells) == 2  # fp16: none and dynamic
    clean = tmp_path / "clean"
    run_cells(cells, clean, "clean")
    from suite.records import read_records

    assert not compare_records(old, read_records(clean), tasks=["stiff-rk4"]).regressions
    monkeypatch.setattr(_scaler.ScalerRound, "scale", lambda self, amax, step: self.one)
    broken = tmp_path / "broken"
    run_cells(cells, broken, "broken")
    bad = compare_records(old, read_records(broken), tasks=["stiff-rk4"]).regressions
    assert any(r.metric.startswith("rel_err_grad") and "dynamic" in r.cell for r in bad), bad


def _gate_fixture(tmp_path):
    run = tmp_path / "run"
    RecordStore(run / "records.jsonl").append(record(metrics={"rel_err_y_T": 0.5}))
    base = tmp_path / "base"
    write_baseline(base, [record(metrics={"rel_err_y_T": 0.5})], None, "test", force=True)
    return run, base


@pytest.mark.parametrize("damage", ["torn", "missing", "edited", "added"])
def test_a_damaged_baseline_is_refused_naming_the_file_and_the_line(tmp_path, capsys, damage):
    run, base = _gate_fixture(tmp_path)
    write_baseline(base, [record(metrics={"rel_err_y_T": 0.5}), record(task="cnf-2d")], None, "test", force=True)
    path = base / "records.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = {"torn": lines[0] + lines[1][: len(lines[1]) // 2], "missing": lines[0],
               "edited": lines[0] + lines[1].replace(b'"fp16"', b'"fp32"'), "added": b"".join(lines) + lines[0]}
    path.write_bytes(damaged[damage])
    assert main(["gate", str(run), "--baseline", str(base)]) == 2
    err = capsys.readouterr().err
    line = {"torn": 2, "missing": 2, "edited": 2, "added": 3}[damage]
    assert f"{path}:{line}" in err and "likely a bug" not in err


def test_a_gate_that_compared_nothing_or_was_told_nonsense_is_an_error(tmp_path, capsys):
    run, base = _gate_fixture(tmp_path)
    assert main(["gate", str(run), "--baseline", str(base)]) == 0
    assert main(["gate", str(run), "--baseline", str(base), "--task", "nope"]) == 2
    assert "--task 'nope' has no records here; tasks in the records: stiff-rk4" in capsys.readouterr().err
    other = tmp_path / "other"
    RecordStore(other / "records.jsonl").append(record(task="cnf-2d"))
    assert main(["gate", str(other), "--baseline", str(base)]) == 2  # no cell in both: nothing was checked
    assert "checked nothing" in capsys.readouterr().err
    assert main(["gate", str(other), "--baseline", str(base), "--allow-empty"]) == 0
    assert main(["compare", str(base), str(other)]) == 2
    for factor in ("nan", "0", "-1", "inf", "x"):
        with pytest.raises(SystemExit) as exit_:
            main(["gate", str(run), "--baseline", str(base), "--time-factor", factor])
        assert exit_.value.code == 2
    assert main(["gate", str(run), "--baseline", str(base), "--markdown", str(tmp_path / "no" / "g.md")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_update_takes_only_specs_committed_in_a_checkout_unless_forced(tmp_path, capsys):
    spec = tmp_path / "mine.toml"
    spec.write_text("task = 'stiff-rk4'\n")
    mine = {**record(), "spec": {"path": str(spec), "sha256": "0" * 64}}
    run = tmp_path / "run"
    RecordStore(run / "records.jsonl").append(mine)
    assert main(["gate", str(run), "--baseline", str(tmp_path / "b"), "--update"]) == 2
    assert "is not in a git checkout" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main(["gate", str(run), "--baseline", str(tmp_path / "b"), "--update", "--force"]) == 0
    assert "--force" in json.loads((tmp_path / "b" / "baseline.json").read_text())["command"]


def test_a_spec_that_git_places_outside_its_own_checkout_is_named_not_a_crash(tmp_path, monkeypatch):
    import subprocess

    from suite import baseline as baseline_module

    spec = tmp_path / "mine.toml"
    spec.write_text("task = 'stiff-rk4'\n")
    answer = subprocess.CompletedProcess([], 0, stdout=b"/somewhere/else\n")
    monkeypatch.setattr(baseline_module, "_git", lambda args, cwd: answer)  # git names another top level
    problems = baseline_module.uncommitted_specs([{**record(), "spec": {"path": str(spec), "sha256": "0"}}])
    assert problems == [f"{spec} cannot be placed inside its checkout /somewhere/else"]
