"""Per-task table layouts (how the paper lays each table out) and the generic fallback."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from suite.registry import Registry
from suite.report._frame import cell_text

__all__ = ["LAYOUTS", "generic_table", "table_for"]

Layout = Callable[[pd.DataFrame], pd.DataFrame]
LAYOUTS: Registry[Layout] = Registry("report layout")

_PRECISION_ORDER = {"fp64": 0, "fp32": 1, "tf32": 2, "bf16": 3, "fp16": 4}
_SCALING_ORDER = {"none": 0, "grad": 1, "dynamic": 2}


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    key = frame.assign(
        _p=frame["precision"].map(_PRECISION_ORDER).fillna(9),
        _s=frame["scaling"].map(_SCALING_ORDER).fillna(9),
    )
    return key.sort_values(["variant", "_p", "_s", "backend", "seed"]).drop(columns=["_p", "_s"])


def _metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("metric:")]


def generic_table(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, row in _sorted(frame).iterrows():
        out = {k: row[k] for k in ("variant", "precision", "scaling", "backend", "seed")}
        out.update({c.removeprefix("metric:"): cell_text(row, c, "{:.4g}") for c in _metric_columns(frame)})
        out["total (s)"] = cell_text(row, "timing:total_s", "{:.2f}")
        out["status"] = row["status"]
        rows.append(out)
    return pd.DataFrame(rows)


@LAYOUTS.register("stiff-rk4")
def stiff_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Like the slide: rows precision × scaling × backend; columns the five relative errors."""
    columns = {
        "RE y(T)": "metric:rel_err_y_T",
        "RE ∂y0": "metric:rel_err_grad_y0",
        "RE ∂θ1": "metric:rel_err_grad_theta1",
        "RE ∂θ2": "metric:rel_err_grad_theta2",
        "RE ∂θ3": "metric:rel_err_grad_theta3",
    }
    rows = []
    for _, row in _sorted(frame).iterrows():
        out = {"variant": row["variant"], "dtype": row["precision"], "scaling": row["scaling"],
               "backend": row["backend"]}
        out.update({label: cell_text(row, col) for label, col in columns.items()})
        retries = row.get("stats:n_retries")
        out["retries"] = "" if retries is None or pd.isna(retries) else f"{int(retries)}"
        out["time (s)"] = cell_text(row, "timing:total_s", "{:.2f}")
        rows.append(out)
    return pd.DataFrame(rows)


def table_for(task: str, frame: pd.DataFrame) -> pd.DataFrame:
    layout = LAYOUTS.get(task) if task in LAYOUTS else generic_table
    return layout(frame)
