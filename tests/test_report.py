"""Reports: tables in three formats, failed cells shown as failures with their reason, figures written."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import registered_backend
from stubs import cell, stub

from suite.cli import main
from suite.executors.inprocess import run_cells
from suite.report import build_report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    broken = stub("nan")
    with registered_backend(broken.name, broken):
        run_cells([cell("engine"), cell("engine", precision="fp16", scaling="dynamic"), cell("stub-nan"),
                   cell("engine", scaling="grad")], out, "report-test")
    return out


def test_report_writes_markdown_csv_latex_and_figure(run_dir, tmp_path):
    files = build_report(run_dir, tmp_path / "rep")
    names = {p.name for p in files.files}
    assert {"index.md", "stiff-rk4.md", "stiff-rk4.csv", "stiff-rk4.tex", "stiff-rk4-published.png"} <= names
    md = (tmp_path / "rep" / "stiff-rk4.md").read_text()
    assert "fails (nonfinite)" in md and "unsupported" in md
    assert "stub-nan" in md and "non-finite" in md  # the failure list gives the reason
    table = pd.read_csv(tmp_path / "rep" / "stiff-rk4.csv")
    assert list(table.columns[:4]) == ["variant", "dtype", "scaling", "backend"]
    assert {"RE y(T)", "RE ∂y0", "RE ∂θ1", "RE ∂θ2", "RE ∂θ3"} <= set(table.columns)
    engine_fp32 = table[(table.backend == "engine") & (table.dtype == "fp32") & (table.scaling == "none")]
    assert float(engine_fp32["RE y(T)"].iloc[0]) < 1e-2
    tex = (tmp_path / "rep" / "stiff-rk4.tex").read_text()
    assert "\\begin{tabular}" in tex and "$\\partial$" in tex
    index = (tmp_path / "rep" / "index.md").read_text()
    assert "report-test" in index and "Device(s): cpu" in index


def test_report_command_on_a_bad_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no records file" in capsys.readouterr().err


def test_list_shows_backends_and_their_capabilities(capsys):
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    for word in ("stiff-rk4", "engine", "torchdiffeq-adjoint", "rk4-38", "dynamic", "bf16", "smoke"):
        assert word in printed


def test_a_task_with_two_seeds_names_the_seed_of_every_row(tmp_path):
    """Two rows differing only by seed must not read as one configuration printed twice."""
    import dataclasses

    run_cells([cell("engine", steps=40), dataclasses.replace(cell("engine", steps=40), seed=1)], tmp_path / "run",
              "seeds")
    build_report(tmp_path / "run", tmp_path / "rep")
    table = pd.read_csv(tmp_path / "rep" / "stiff-rk4.csv")
    assert table.columns[0] == "seed" and sorted(table["seed"]) == [0, 1]


def test_a_task_with_one_seed_has_no_seed_column(run_dir, tmp_path):
    build_report(run_dir, tmp_path / "rep")
    assert "seed" not in pd.read_csv(tmp_path / "rep" / "stiff-rk4.csv").columns


def test_a_report_from_records_alone_leaves_out_what_needs_artifacts_and_says_so(tmp_path):
    """baselines/cpu-smoke holds records only (no artifacts/): every task still gets its tables; the figures
    drawn from artifact files are left out, and each task's notes say how many files were missing."""
    from pathlib import Path

    baseline = Path(__file__).resolve().parents[1] / "baselines" / "cpu-smoke"
    assert not (baseline / "artifacts").exists()
    assert main(["report", str(baseline), "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "index.md").read_text()
    for task in ("stiff-rk4", "cnf-2d", "otflow-bsds300", "stl10", "sde-adjoint-bias", "soc-100d"):
        assert f"## {task}" in text
    assert "Figures left out: 12 artifact file(s)" in (tmp_path / "r" / "soc-100d.md").read_text()
    assert not (tmp_path / "r" / "soc-100d-curves.png").exists()
    assert main(["compare", str(baseline), str(baseline)]) == 0  # compare reads records alone as well
