"""Records → a flat pandas DataFrame (one row per cell, one column per metric)."""

from __future__ import annotations

import math

import pandas as pd

from suite.records import FAILED_STATUSES

__all__ = ["records_frame", "cell_text", "AXIS_COLUMNS"]

AXIS_COLUMNS = ["task", "variant", "backend", "method", "steps", "precision", "scaling", "seed", "profile", "device"]


def _number(value) -> float:
    if isinstance(value, str):  # inf/nan are stored as strings to keep the file standard JSON
        try:
            return float(value)
        except ValueError:
            return math.nan
    return float(value) if value is not None else math.nan


def records_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        row = {k: r[k] for k in AXIS_COLUMNS}
        # a non-default engine memory setting is part of the solver's name in every table and figure
        row["memory_setting"] = r.get("memory_setting", "states")
        if row["memory_setting"] != "states":
            row["backend"] = f"{r['backend']} [{row['memory_setting']}]"
        row.update({"status": r["status"], "reason": r["reason"], "run_id": r["run_id"], "cell_id": r["cell_id"]})
        row.update({f"metric:{k}": _number(v) for k, v in r["metrics"].items()})
        row.update({f"timing:{k}": _number(v) for k, v in r["timing"].items()})
        peak = r["memory"].get("peak_bytes") if isinstance(r["memory"], dict) else None
        row["peak_mem_gib"] = _number(peak) / 2**30 if peak is not None else math.nan
        row["memory_what"] = r["memory"].get("what", "") if isinstance(r["memory"], dict) else ""
        # the process's peak RSS is one cell's only where that cell had the process to itself
        per_cell = isinstance(r["memory"], dict) and r["memory"].get("per_cell") is True and r["device"] == "cpu"
        row["derived:rss_mib"] = _number(peak) / 2**20 if per_cell and peak is not None else math.nan
        stats = r.get("stats") or {}
        for key in ("n_retries", "scale_min", "scale_max", "n_host_syncs_backward"):
            if key in stats:
                row[f"stats:{key}"] = _number(stats[key])
        row["device_name"] = (r.get("env") or {}).get("device_name", "")
        dataset = (r.get("inputs") or {}).get("dataset") or (r.get("extra") or {}).get("dataset")
        row["dataset"] = dataset if isinstance(dataset, str) else ""
        row.update({f"artifact:{k}": v for k, v in (r.get("artifacts") or {}).items()})
        row.update({f"extra:{k}": v for k, v in (r.get("extra") or {}).items() if isinstance(v, str)})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        # A later record of the same cell (a resumed rerun) replaces the earlier one.
        frame = frame.drop_duplicates(subset=["cell_id"], keep="last").reset_index(drop=True)
    return frame


def cell_text(row: pd.Series, column: str, fmt: str = "{:.1e}") -> str:
    """A metric as the paper prints it, or 'fails (status)' for a failed cell."""
    if row["status"] in FAILED_STATUSES:
        return f"fails ({row['status']})"
    if row["status"] == "unsupported":
        return "unsupported"
    value = row.get(column, math.nan)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)
