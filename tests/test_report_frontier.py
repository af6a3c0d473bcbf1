"""The report's "memory against time" table and figure, from records alone (a memory sweep included)."""

from __future__ import annotations

from suite.report._frame import records_frame
from suite.report._frontier import frontier_figure, frontier_table


def _record(backend, precision, scaling, saved, iter_s, memory="states", status="ok"):
    cell = f"t/v/{backend}/rk4/N=8/{precision}/{scaling}/{'' if memory == 'states' else 'mem=' + memory + '/'}seed=0/p"
    return {"task": "t", "variant": "v", "backend": backend, "method": "rk4", "steps": 8, "precision": precision,
            "scaling": scaling, "seed": 0, "profile": "p", "device": "cpu", "status": status, "reason": "",
            "run_id": "r", "cell_id": cell, "memory_setting": memory, "memory": {}, "timing": {},
            "metrics": {"saved_for_backward_mib": saved, "iter_s": iter_s}}


def test_rows_are_ratios_to_the_fp32_engine_and_memory_settings_are_their_own_rows(tmp_path):
    frame = records_frame([
        _record("engine", "fp32", "none", 2.0, 1.0),
        _record("engine", "fp32", "none", 20.0, 0.8, memory="stages"),
        _record("engine", "fp32", "none", 0.5, 1.3, memory="checkpoint:4"),
        _record("engine", "bf16", "none", 1.0, 1.5),
        _record("torchdiffeq", "fp32", "none", 40.0, 0.9),
        _record("torchdiffeq", "fp16", "none", 0.0, 0.0, status="nonfinite"),  # failed: not a point
    ])
    table = frontier_table(frame)
    rows = {(r["backend"], r["precision"]): r for _, r in table.iterrows()}
    assert len(table) == 5
    assert rows[("engine", "fp32")]["× fp32 engine"] == "1.00"
    assert rows[("engine [stages]", "fp32")]["× fp32 engine"] == "10.00"
    assert rows[("engine [stages]", "fp32")]["time × fp32 engine"] == "0.80"
    assert rows[("engine [checkpoint:4]", "fp32")]["× fp32 engine"] == "0.25"
    assert rows[("torchdiffeq", "fp32")]["× fp32 engine"] == "20.00"
    [figure] = frontier_figure("t", frame, tmp_path)
    assert figure.name == "t-memory-vs-time.png" and figure.stat().st_size > 0


def test_nothing_is_drawn_without_saved_bytes(tmp_path):
    frame = records_frame([_record("engine", "fp32", "none", float("nan"), 1.0)])
    assert frontier_table(frame).empty and frontier_figure("t", frame, tmp_path) == []
