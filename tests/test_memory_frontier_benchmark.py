"""benchmarks/memory_frontier.py runs at a tiny size (a smoke check: nothing here is timed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from memory_frontier import main  # noqa: E402

pytest.importorskip("torchdiffeq")


def test_the_frontier_script_measures_every_setting(tmp_path):
    out = tmp_path / "frontier.json"
    rows = main(["--tiny", "--repeats", "1", "--problems", "long", "--checkpoint-every", "4",
                 "--json", str(out), "--figure", str(tmp_path / "frontier.png")])
    assert json.loads(out.read_text())["rows"] == rows
    assert (tmp_path / "frontier.png").stat().st_size > 0
    seen = {(r["problem"], r["solver"], r["memory"], r["precision"]) for r in rows}
    for problem in ("long",):
        for precision in ("fp32", "bf16", "fp16"):
            for memory in ("states", "stages", "checkpoint", "checkpoint:4"):
                assert (problem, "engine", memory, precision) in seen
        assert (problem, "torchdiffeq", "autograd", "fp32") in seen
        assert (problem, "torchdiffeq-adjoint", "adjoint", "fp32") in seen
    saved = {(r["problem"], r["memory"], r["precision"]): r["saved_for_backward_mib"] for r in rows
             if r["solver"] == "engine"}
    # exact byte counts, not times: 40 steps kept as 16-bit states vs ⌈√40⌉ = 7-step fp32 checkpoints
    assert saved[("long", "checkpoint", "bf16")] < saved[("long", "states", "bf16")] < saved[("long", "stages", "bf16")]
    assert all(r["repeats"] == 1 and r["fwd_bwd_ms_median"] > 0 for r in rows)


def test_sixteen_bit_rows_can_be_left_untimed_and_runs_merged(tmp_path):
    out = tmp_path / "long.json"
    rows = main(["--tiny", "--repeats", "2", "--low-repeats", "0", "--problems", "long", "--checkpoint-every", "4",
                 "--json", str(out)])
    for r in rows:
        assert r["saved_for_backward_mib"] > 0
        if r["precision"] == "fp32":
            assert r["repeats"] == 2 and r["fwd_bwd_ms_median"] > 0
        else:
            assert r["repeats"] == 0 and r["fwd_bwd_ms_median"] != r["fwd_bwd_ms_median"]  # NaN: not timed
    figure = tmp_path / "merged.png"
    merged = main(["--merge", f"{out},{out}", "--figure", str(figure)])
    assert json.dumps(merged) == json.dumps(rows + rows)  # as text: NaN is not equal to itself
    assert figure.stat().st_size > 0
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="bad.json"):
        main(["--merge", str(tmp_path / "bad.json")])
