"""Build a report (Markdown, CSV, LaTeX tables and figures) from a run's records. Never re-runs a task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from suite.records import FAILED_STATUSES, RecordsError, read_records
from suite.report._frame import records_frame
from suite.report._layouts import notes_for, table_for
from suite.report._plots import PLOTS

__all__ = ["build_report", "ReportFiles"]


@dataclass
class ReportFiles:
    out_dir: Path
    files: list[Path]


def _failures_section(frame: pd.DataFrame) -> str:
    failed = frame[frame["status"].isin([s.value for s in FAILED_STATUSES] + ["unsupported"])]
    if failed.empty:
        return ""
    lines = ["", "### Cells that did not produce numbers", ""]
    for _, row in failed.iterrows():
        lines.append(f"- `{row['cell_id']}`: **{row['status']}** — {row['reason']}")
    return "\n".join(lines) + "\n"


def _provenance(frame: pd.DataFrame) -> str:
    devices = ", ".join(sorted({f"{d} ({n})" for d, n in zip(frame["device"], frame["device_name"])}))
    runs = ", ".join(sorted(frame["run_id"].unique()))
    mem = "; ".join(sorted(set(frame["memory_what"]) - {""}))
    return f"Run(s): {runs}. Device(s): {devices}. Peak memory is {mem}.\n"


_LATEX_SYMBOLS = {"∂": r"$\partial$", "θ": r"$\theta$", "±": r"$\pm$"}


def _latex(table: pd.DataFrame) -> str:
    """LaTeX table with the Unicode symbols of the headers spelled as math, the rest escaped."""
    text = table.to_latex(index=False, escape=True)
    for symbol, tex in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, tex)
    return text


def build_report(run_dir: Path | str, out_dir: Path | str | None = None) -> ReportFiles:
    """Tables and figures of a run into `out_dir` (default `reports/<name of the run directory>`).

    The output folder never comes from the records' contents: a shared or crafted records file cannot
    choose where the report is written.
    """
    run_dir = Path(run_dir)
    records = read_records(run_dir)
    frame = records_frame(records)
    if frame.empty:
        raise RecordsError(f"{run_dir}: the records file holds no records; nothing to report "
                           "(run cells first: ctbench run --out DIR)")
    run_id = frame["run_id"].iloc[-1]
    if out_dir is None:
        base = run_dir.resolve().parent if run_dir.is_file() else run_dir.resolve()
        out_dir = Path("reports") / base.name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    index = [f"# ctbench report: {run_id}", "", _provenance(frame)]
    counts = frame["status"].value_counts().to_dict()
    index.append("Cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + "\n")
    for task, sub in frame.groupby("task", sort=True):
        table = table_for(task, sub)
        md = table.to_markdown(index=False, disable_numparse=True)
        (out / f"{task}.csv").write_text(table.to_csv(index=False))
        (out / f"{task}.tex").write_text(_latex(table))
        figures = PLOTS.get(task)(sub, out, run_dir) if task in PLOTS else []
        section = [f"## {task}", "", md, ""]
        section += [*notes_for(task, sub), ""] if notes_for(task, sub) else []
        section += [f"![{p.stem}]({p.name})" for p in figures]
        section.append(_failures_section(sub))
        (out / f"{task}.md").write_text("\n".join(section) + "\n")
        files += [out / f"{task}.md", out / f"{task}.csv", out / f"{task}.tex", *figures]
        index += section
    (out / "index.md").write_text("\n".join(index) + "\n")
    files.insert(0, out / "index.md")
    return ReportFiles(out_dir=out, files=files)
