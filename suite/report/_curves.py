"""Learning curves and time to target: the table and the figures a training task's report gets.

Both read `extra.curve` from the records (suite/tasks/_training.py), so they need no artifact files: a run
directory copied without `artifacts/` still reports them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from suite.report._plots import pyplot
from suite.report._targets import curve_of, time_to_target_frame

__all__ = ["time_to_target_table", "learning_curve_figures", "FLOOR_METRICS"]

# The exact floor (or reference) each task's curve is drawn against, by the metric holding it.
FLOOR_METRICS = {"cnf-2d": ("entropy", "entropy H(p)"), "otflow-bsds300": ("entropy", "entropy H(p)"),
                 "soc-100d": ("value_reference", "exact value V(0, z0)")}
_PRECISION_ORDER = {"fp64": 0, "fp32": 1, "tf32": 2, "bf16": 3, "fp16": 4}


def _fmt(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return "–"
    return fmt.format(value)


def _memory(record: dict) -> tuple[float, float]:
    """(saved for backward MiB, per-cell peak memory MiB: CUDA allocator peak or the cell process's RSS)."""
    saved = record.get("metrics", {}).get("saved_for_backward_mib", math.nan)
    memory = record.get("memory") or {}
    per_cell = record.get("device") == "cuda" or memory.get("per_cell") is True
    peak = memory.get("peak_bytes") if per_cell else None
    try:
        return float(saved), (float(peak) / 2**20 if peak is not None else math.nan)
    except (TypeError, ValueError):
        return math.nan, math.nan


def time_to_target_table(records: list[dict]) -> pd.DataFrame:
    """backend × precision × scaling per variant: the target, where each row reached it, its ratio to the fp32
    engine row's time, and its memory. "not reached" is never a number."""
    frame = time_to_target_frame(records)
    if frame.empty:
        return frame
    by_id = {r["cell_id"]: r for r in records}
    frame = frame.assign(_p=frame["precision"].map(_PRECISION_ORDER).fillna(9))
    rows = []
    for _, row in frame.sort_values(["variant", "dataset", "_p", "scaling", "backend", "seed"]).iterrows():
        saved, peak = _memory(by_id[row["cell_id"]])
        reached = row["reached_iteration"] is not None and not pd.isna(row["reached_iteration"])
        rows.append({
            "variant": row["variant"], "data set": row["dataset"] or "–", "precision": row["precision"],
            "scaling": row["scaling"], "backend": row["backend"], "seed": row["seed"], "status": row["status"],
            f"target ({row['metric']})": _fmt(row["target"], "{:.4g}"), "final": _fmt(row["final"], "{:.4g}"),
            "reached at iteration": f"{int(row['reached_iteration'])}" if reached else "not reached",
            "reached at (s)": _fmt(row["reached_s"], "{:.1f}") if reached else "not reached",
            "× fp32 engine": _fmt(row["ratio_to_fp32_engine"], "{:.2f}") if reached else "–",
            "saved for bwd (MiB)": _fmt(saved, "{:.2f}"),
            "peak mem, own process (MiB)": _fmt(peak, "{:.0f}"),
        })
    return pd.DataFrame(rows)


def learning_curve_figures(task: str, records: list[dict], out_dir: Path) -> list[Path]:
    """Per variant: the validation metric against iteration and against training seconds (evaluation
    excluded), one line per backend × precision × scaling, with the exact floor as a dashed line."""
    latest: dict[str, dict] = {}
    for r in records:
        latest[r["cell_id"]] = r
    cells = [r for r in latest.values() if r["task"] == task and curve_of(r) is not None]
    if not cells:
        return []
    plt = pyplot()
    paths = []
    variants = list(dict.fromkeys(r["variant"] for r in cells))
    for variant in variants:
        members = sorted((r for r in cells if r["variant"] == variant),
                         key=lambda r: (_PRECISION_ORDER.get(r["precision"], 9), r["scaling"], r["backend"]))
        spec = curve_of(members[0])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for r in members:
            curve = curve_of(r)
            label = f"{r['backend']} {r['precision']} {r['scaling']}" + ("" if r["status"] == "ok" else
                                                                         f" ({r['status']})")
            style = "-" if r["backend"].startswith("engine") else "--"
            axes[0].plot(curve["iteration"], curve["value"], style, lw=1.2, label=label)
            axes[1].plot(curve["train_s"], curve["value"], style, lw=1.2, label=label)
        floor_metric = FLOOR_METRICS.get(task)
        if floor_metric is not None:
            values = [r["metrics"].get(floor_metric[0]) for r in members]
            values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
            if values:
                for ax in axes:
                    ax.axhline(values[0], color="black", ls=":", lw=1.0, label=floor_metric[1])
        finite = [v for r in members for v in curve_of(r)["value"] if math.isfinite(v)]
        if finite and floor_metric is not None and values:
            low = min(min(finite), values[0])
            tail = sorted(finite)[: max(1, len(finite) * 3 // 4)]
            axes[0].set_ylim(low - 0.05 * abs(low) - 1e-3, max(tail) + 0.1 * (max(tail) - low) + 1e-3)
        axes[0].set_xlabel("iteration")
        axes[1].set_xlabel("training time (s, evaluation excluded)")
        axes[0].set_ylabel(spec["metric"])
        axes[1].legend(fontsize=7, loc="best")
        fig.suptitle(f"{task} ({variant}): {spec.get('what') or spec['metric']}", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{task}-{variant}-curves.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
