"""The engine's memory setting as a spec axis: swept like method or steps, named in ids, refused where absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from suite.executors.inprocess import run_cells
from suite.records import read_records
from suite.spec import SpecError, expand, load_spec

STIFF = Path(__file__).resolve().parent.parent / "suite" / "specs" / "stiff-rk4.toml"
SWEEP = 'seed = [0]\nmemory = ["states", "stages", "checkpoint:20"]'


def _spec(tmp_path: Path, old: str, new: str):
    text = STIFF.read_text()
    assert old in text
    path = tmp_path / "stiff-rk4.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_a_memory_sweep_expands_and_leaves_default_cells_as_they_were(tmp_path):
    before = {c.cell_id: c.spec_hash for c in expand(load_spec(STIFF), "smoke")}
    cells = expand(load_spec(_spec(tmp_path, "seed = [0]", SWEEP)), "smoke")
    by_memory = {m: [c for c in cells if c.memory == m] for m in ("states", "stages", "checkpoint:20")}
    assert all(len(v) == len(before) for v in by_memory.values())
    # the default setting keeps its id and hash (committed records and baselines stay valid) ...
    assert {c.cell_id: c.spec_hash for c in by_memory["states"]} == before
    # ... the others are named, and hashed apart
    for memory in ("stages", "checkpoint:20"):
        assert all(f"/mem={memory}/" in c.cell_id for c in by_memory[memory])
        assert not {c.spec_hash for c in by_memory[memory]} & set(before.values())


def test_the_solver_default_and_exclusions_use_the_axis(tmp_path):
    path = _spec(tmp_path, 'steps = 399', 'steps = 399\nmemory = "checkpoint:08"')
    assert {c.memory for c in expand(load_spec(path), "smoke")} == {"checkpoint:8"}  # written canonically
    path = _spec(tmp_path, "seed = [0]", SWEEP)
    text = path.read_text().replace("exclude = [\n", 'exclude = [\n  { memory = "stages", backend = "torchdiffeq" },\n',
                                    1)
    path.write_text(text)
    cells = expand(load_spec(path), "smoke")
    assert not [c for c in cells if c.memory == "stages" and c.backend == "torchdiffeq"]
    assert [c for c in cells if c.memory == "stages" and c.backend == "engine"]


@pytest.mark.parametrize(("old", "new", "where"), [
    ("steps = 399", 'steps = 399\nmemory = "everything"', r"solver\.memory"),
    ("seed = [0]", 'seed = [0]\nmemory = ["states", "checkpoint:0"]', r"matrix\.memory"),
    ("seed = [0]", 'seed = [0]\nmemory = ["stages", "stages"]', r"matrix\.memory"),
])
def test_a_bad_memory_value_is_a_spec_error(tmp_path, old, new, where):
    with pytest.raises(SpecError, match=where) as info:
        load_spec(_spec(tmp_path, old, new))
    if "everything" in new or "checkpoint:0" in new:
        assert "checkpoint:K" in str(info.value)


def test_engine_cells_run_each_setting_and_others_are_unsupported(tmp_path):
    cells = [c for c in expand(load_spec(_spec(tmp_path, "seed = [0]", SWEEP)), "smoke")
             if c.variant == "published" and c.precision == "fp16"
             and (c.backend, c.scaling) in {("engine", "dynamic"), ("torchdiffeq", "none")}]
    out = tmp_path / "run"
    run_cells(cells, out, run_id="memory-axis")
    records = {r["cell_id"]: r for r in read_records(out / "records.jsonl")}
    assert len(records) == len(cells) == 6
    grads = {}
    for r in records.values():
        assert r["memory_setting"] in ("states", "stages", "checkpoint:20")
        if r["backend"] == "engine":
            assert r["status"] == "ok", r["reason"]
            grads[r["memory_setting"]] = r["metrics"]
        elif r["memory_setting"] == "states":
            assert r["status"] == "ok", r["reason"]
        else:
            assert r["status"] == "unsupported" and "only the engine's ODE solver takes memory=" in r["reason"]
    # the same gradients whatever the setting (same steps, same quantized states)
    keys = [k for k in grads["states"] if k.startswith("rel_err")]
    assert keys
    for memory in ("stages", "checkpoint:20"):
        for key in keys:
            assert grads[memory][key] == pytest.approx(grads["states"][key], rel=1e-6, abs=1e-12)
