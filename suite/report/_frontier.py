"""Memory against time per task: what each solver, precision and memory setting keeps for the backward
against what one forward + backward costs, as a table and a figure (the trade the engine's memory= knob
moves along; a spec sweeps it with `[matrix] memory = [...]`).

Read from the records' metrics alone (`saved_for_backward_mib`, counted with saved-tensor hooks, and the
per-iteration time `iter_s`, else `fwd_s + bwd_s`), so no artifact files are needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from suite.report._plots import pyplot

__all__ = ["frontier_table", "frontier_figure", "FRONTIER_TITLE", "FRONTIER_NOTE"]

FRONTIER_TITLE = "Memory against time"
FRONTIER_NOTE = ("Bytes autograd keeps for the backward (saved-tensor hooks: exact, device independent; not the "
                 "allocator's peak) against the median time of one forward + backward (a training iteration "
                 "where the task trains), ok cells only; ratios are to the fp32 engine row of the same variant "
                 "(default memory setting).")
_PRECISION_ORDER = {"fp64": 0, "fp32": 1, "tf32": 2, "bf16": 3, "fp16": 4}


def _seconds(row: pd.Series) -> float:
    for column in ("metric:iter_s",):
        if column in row and not pd.isna(row[column]):
            return float(row[column])
    fwd, bwd = row.get("metric:fwd_s", math.nan), row.get("metric:bwd_s", math.nan)
    return float(fwd) + float(bwd) if not (pd.isna(fwd) or pd.isna(bwd)) else math.nan


def _points(frame: pd.DataFrame) -> pd.DataFrame:
    if "metric:saved_for_backward_mib" not in frame:
        return pd.DataFrame()
    ok = frame[frame["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["_saved"] = ok["metric:saved_for_backward_mib"].astype(float)
    ok["_s"] = ok.apply(_seconds, axis=1)
    ok = ok[ok["_saved"].notna() & ok["_s"].notna() & (ok["_saved"] > 0)]
    return ok.assign(_p=ok["precision"].map(_PRECISION_ORDER).fillna(9))


def frontier_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per variant: backend [memory setting] × precision × scaling, saved MiB, seconds, both as ratios to the
    fp32 engine row. Empty when the task records no saved bytes or fewer than two rows have them."""
    points = _points(frame)
    if len(points) < 2:
        return pd.DataFrame()
    rows = []
    for variant, sub in points.groupby("variant", sort=True):
        base = sub[(sub["backend"] == "engine") & (sub["precision"] == "fp32") & (sub["scaling"] == "none")]
        ref_saved = float(base["_saved"].median()) if not base.empty else math.nan
        ref_s = float(base["_s"].median()) if not base.empty else math.nan
        for _, r in sub.sort_values(["_p", "scaling", "backend"]).iterrows():
            rows.append({
                "variant": variant, "backend": r["backend"], "precision": r["precision"], "scaling": r["scaling"],
                "saved for backward (MiB)": f"{r['_saved']:.3g}",
                "× fp32 engine": f"{r['_saved'] / ref_saved:.2f}" if math.isfinite(ref_saved) else "–",
                "s per fwd+bwd": f"{r['_s']:.3g}",
                "time × fp32 engine": f"{r['_s'] / ref_s:.2f}" if math.isfinite(ref_s) else "–",
            })
    return pd.DataFrame(rows)


def frontier_figure(task: str, frame: pd.DataFrame, out: Path) -> list[Path]:
    """One panel per variant: saved MiB (log) against seconds per forward + backward."""
    points = _points(frame)
    if len(points) < 2:
        return []
    plt = pyplot()
    variants = sorted(points["variant"].unique())
    fig, axes = plt.subplots(1, len(variants), figsize=(5.0 * len(variants), 4.0), squeeze=False)
    markers = {"fp64": "D", "fp32": "o", "tf32": "P", "bf16": "s", "fp16": "^"}
    labels = sorted(points["backend"].unique())
    colours = {b: plt.get_cmap("tab10")(k % 10) for k, b in enumerate(labels)}
    for ax, variant in zip(axes[0], variants):
        for _, r in points[points["variant"] == variant].iterrows():
            ax.scatter(r["_saved"], r["_s"], marker=markers.get(r["precision"], "x"), color=colours[r["backend"]],
                       s=45, edgecolors="black", linewidths=0.4,
                       label=f"{r['backend']} {r['precision']} {r['scaling']}")
        ax.set_xscale("log")
        ax.set_xlabel("saved for backward (MiB, log)")
        ax.set_ylabel("seconds per forward + backward")
        ax.set_title(f"{task}: {variant}")
        ax.legend(fontsize=6)
    fig.tight_layout()
    target = out / f"{task}-memory-vs-time.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return [target]
