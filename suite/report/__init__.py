"""Build a report (HTML, Markdown, CSV, LaTeX tables and figures) from a run's records. Never re-runs a task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from suite.records import FAILED_STATUSES, RecordsError, read_records
from suite.report._curves import learning_curve_figures, time_to_target_table
from suite.report._frame import records_frame
from suite.report._html import TaskSection, render_html
from suite.report._layouts import notes_for, table_for
from suite.report._plots import PLOTS

__all__ = ["build_report", "ReportFiles"]


@dataclass
class ReportFiles:
    out_dir: Path
    files: list[Path]


TIME_TO_TARGET_TITLE = "Time to target"
TIME_TO_TARGET_NOTE = (
    "Target: the fp32 engine row's last learning-curve value (median over seeds), loosened by the task's "
    "tolerance; each row's first curve point at or past it, in iterations and in training seconds with every "
    "evaluation excluded (AlgoPerf's time-to-result). A row that never gets there says \"not reached\". Peak "
    "memory is per cell only where the cell had its own process (--executor local/slurm) or a CUDA allocator.")


def _failures(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    failed = frame[frame["status"].isin([s.value for s in FAILED_STATUSES] + ["unsupported"])]
    return [(row["cell_id"], row["status"], row["reason"]) for _, row in failed.iterrows()]


def _failures_section(failures: list[tuple[str, str, str]]) -> str:
    if not failures:
        return ""
    lines = ["", "### Cells that did not produce numbers", ""]
    lines += [f"- `{cell}`: **{status}** — {reason}" for cell, status, reason in failures]
    return "\n".join(lines) + "\n"


def _pipeline_note(frame: pd.DataFrame) -> str:
    """Training tasks at the smoke profile: say that the numbers check the pipeline, nothing more."""
    smoke = frame[(frame["profile"] == "smoke") & (frame["status"] == "ok")]
    if smoke.empty or "metric:iters_done" not in smoke:
        return ""
    iterations = smoke["metric:iters_done"].dropna()
    if iterations.empty:
        return ""
    return (f"Smoke profile: {int(iterations.max())} training iteration(s) per cell on tiny shapes. These numbers "
            "check the pipeline end to end; they are not converged results and not comparable with the paper.")


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
    provenance = _provenance(frame)
    counts = frame["status"].value_counts().to_dict()
    counts_text = "Cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    index = [f"# ctbench report: {run_id}", "", provenance, counts_text + "\n"]
    sections: list[TaskSection] = []
    for task, sub in frame.groupby("task", sort=True):
        table = table_for(task, sub)
        md = table.to_markdown(index=False, disable_numparse=True)
        (out / f"{task}.csv").write_text(table.to_csv(index=False))
        (out / f"{task}.tex").write_text(_latex(table))
        figures = PLOTS.get(task)(sub, out, run_dir) if task in PLOTS else []
        task_records = [r for r in records if r["task"] == task]
        figures += learning_curve_figures(task, task_records, out)
        notes, pipeline, failures = notes_for(task, sub), _pipeline_note(sub), _failures(sub)
        section = [f"## {task}", ""] + ([f"> {pipeline}", ""] if pipeline else []) + [md, ""]
        section += [*notes, ""] if notes else []
        extra_tables = []
        ttt = time_to_target_table(task_records)
        if not ttt.empty:
            (out / f"{task}-time-to-target.csv").write_text(ttt.to_csv(index=False))
            files.append(out / f"{task}-time-to-target.csv")
            extra_tables.append((TIME_TO_TARGET_TITLE, TIME_TO_TARGET_NOTE, ttt))
            section += [f"### {TIME_TO_TARGET_TITLE}", "", TIME_TO_TARGET_NOTE, "",
                        ttt.to_markdown(index=False, disable_numparse=True), ""]
        section += [f"![{p.stem}]({p.name})" for p in figures]
        section.append(_failures_section(failures))
        (out / f"{task}.md").write_text("\n".join(section) + "\n")
        files += [out / f"{task}.md", out / f"{task}.csv", out / f"{task}.tex", *figures]
        index += section
        sections.append(TaskSection(task, table, notes, pipeline, figures, failures, extra_tables))
    (out / "index.md").write_text("\n".join(index) + "\n")
    page = render_html(f"ctbench report: {run_id}", provenance.strip(), counts_text, sections)
    (out / "index.html").write_text(page, encoding="utf-8")
    files[:0] = [out / "index.md", out / "index.html"]
    return ReportFiles(out_dir=out, files=files)
