"""Build a report (HTML, Markdown, CSV, LaTeX tables and figures) from a run's records. Never re-runs a task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from suite.records import FAILED_STATUSES, RecordsError, read_records
from suite.report._curves import learning_curve_figures, time_to_target_table
from suite.report._frame import records_frame
from suite.report._frontier import FRONTIER_NOTE, FRONTIER_TITLE, frontier_figure, frontier_table
from suite.report._html import TaskSection, render_html
from suite.report._layouts import notes_for, table_for
from suite.report._plots import PLOTS, missing_artifacts

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


def _reference_provenance(records: list[dict]) -> str:
    """Commit(s), date(s) and machine of a committed reference run, for the label above its tables."""
    commits = sorted({(r.get("env") or {}).get("git_sha") or "unknown" for r in records})
    dirty = any((r.get("env") or {}).get("dirty") for r in records)
    dates = sorted(r.get("started_at", "")[:10] for r in records if r.get("started_at"))
    machines = sorted({f"{r['device']}: {(r.get('env') or {}).get('device_name', '')}" for r in records})
    when = dates[0] if dates and dates[0] == dates[-1] else (f"{dates[0]} to {dates[-1]}" if dates else "unknown")
    return (f"commit(s) {', '.join(c[:12] for c in commits)}{' (dirty checkout)' if dirty else ''}; "
            f"run {when}; {'; '.join(machines)}; {len(records)} records")


def build_report(run_dir: Path | str, out_dir: Path | str | None = None,
                 reference_dir: Path | str | None = None) -> ReportFiles:
    """Tables and figures of a run into `out_dir` (default `reports/<name of the run directory>`).

    The output folder never comes from the records' contents: a shared or crafted records file cannot
    choose where the report is written. With `reference_dir` (a committed reference run, e.g.
    results/reference-cpu), its report is built into `out_dir/<its name>/` and its tables and figures lead
    the page under "Reproduced results", labelled with their commit and date, beside the fresh run.
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
    files, index, sections = _task_sections(records, frame, out, run_dir)
    provenance = _provenance(frame)
    counts = frame["status"].value_counts().to_dict()
    counts_text = "Cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    head = [f"# ctbench report: {run_id}", "", provenance, counts_text + "\n"]
    reference_sections: list[TaskSection] = []
    if reference_dir is not None:
        reference_dir = Path(reference_dir)
        ref_records = read_records(reference_dir)
        ref_out = out / reference_dir.name
        ref_out.mkdir(parents=True, exist_ok=True)
        ref_files, ref_index, reference_sections = _task_sections(ref_records, records_frame(ref_records), ref_out,
                                                                 reference_dir)
        label = _reference_provenance(ref_records)
        (ref_out / "index.md").write_text("\n".join([f"# ctbench reference run: {reference_dir.name}", "",
                                                     label, "", *ref_index]) + "\n")
        files.append(ref_out / "index.md")
        prefix = f"{reference_dir.name}/"
        ref_index = [line.replace("](", "](" + prefix) if line.startswith("![") else
                     ("#" + line if line.startswith("#") else line) for line in ref_index]
        head += [f"## Reproduced results ({reference_dir.name})", "",
                 f"The committed reference run `{reference_dir}` ({label}); its full report is in "
                 f"[{prefix}]({prefix}). The fresh run's own sections follow it.", "", *ref_index, ""]
        for section in reference_sections:
            section.task = f"Reproduced results ({reference_dir.name}): {section.task}"
            section.notes = [f"Reference run {label}.", *section.notes]
        files += ref_files
    (out / "index.md").write_text("\n".join(head + index) + "\n")
    page = render_html(f"ctbench report: {run_id}", provenance.strip(), counts_text, reference_sections + sections)
    (out / "index.html").write_text(page, encoding="utf-8")
    files[:0] = [out / "index.md", out / "index.html"]
    return ReportFiles(out_dir=out, files=files)


def _task_sections(records: list[dict], frame: pd.DataFrame, out: Path, run_dir: Path
                   ) -> tuple[list[Path], list[str], list[TaskSection]]:
    """Every task's table, notes, time-to-target table, figures and failures: written as <task>.md/.csv/.tex
    into `out`, and returned as index lines and HTML sections. A figure whose artifact files are missing is
    left out, and the task's notes say so."""
    run_dir = run_dir.parent if run_dir.is_file() else run_dir  # a records.jsonl given directly
    files: list[Path] = []
    index: list[str] = []
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
        missing = missing_artifacts(sub, run_dir)
        if missing:
            kinds = ", ".join(f"{kind} ({n})" for kind, n in sorted(missing.items()))
            notes = [*notes, f"Figures left out: {sum(missing.values())} artifact file(s) named by these records "
                             f"are missing from {run_dir} ({kinds}): records copied without their artifacts/ "
                             "folder, or a baseline. Tables, learning curves and the memory frontier come from the "
                             "records alone."]
        section = [f"## {task}", ""] + ([f"> {pipeline}", ""] if pipeline else []) + [md, ""]
        section += [*notes, ""] if notes else []
        extra_tables = []
        for suffix, title, note, extra in (
            ("time-to-target", TIME_TO_TARGET_TITLE, TIME_TO_TARGET_NOTE, time_to_target_table(task_records)),
            ("memory-vs-time", FRONTIER_TITLE, FRONTIER_NOTE, frontier_table(sub)),
        ):
            if extra.empty:
                continue
            (out / f"{task}-{suffix}.csv").write_text(extra.to_csv(index=False))
            files.append(out / f"{task}-{suffix}.csv")
            extra_tables.append((title, note, extra))
            section += [f"### {title}", "", note, "", extra.to_markdown(index=False, disable_numparse=True), ""]
        figures += frontier_figure(task, sub, out)
        section += [f"![{p.stem}]({p.name})" for p in figures]
        section.append(_failures_section(failures))
        (out / f"{task}.md").write_text("\n".join(section) + "\n")
        files += [out / f"{task}.md", out / f"{task}.csv", out / f"{task}.tex", *figures]
        index += section
        sections.append(TaskSection(task, table, notes, pipeline, figures, failures, extra_tables))
    return files, index, sections
