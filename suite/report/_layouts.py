"""Per-task table layouts (how the paper lays each table out) and the generic fallback."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from suite.registry import Registry
from suite.report._frame import cell_text

__all__ = ["LAYOUTS", "NOTES", "generic_table", "table_for", "notes_for"]

Layout = Callable[[pd.DataFrame], pd.DataFrame]
LAYOUTS: Registry[Layout] = Registry("report layout")
# Lines printed under a task's table (how to read it, derived comparisons); Markdown.
NOTES: Registry[Callable[[pd.DataFrame], list[str]]] = Registry("report notes")


def notes_for(task: str, frame: pd.DataFrame) -> list[str]:
    return NOTES.get(task)(frame) if task in NOTES else []

_PRECISION_ORDER = {"fp64": 0, "fp32": 1, "tf32": 2, "bf16": 3, "fp16": 4}
_SCALING_ORDER = {"none": 0, "grad": 1, "dynamic": 2}


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    variants = {v: k for k, v in enumerate(dict.fromkeys(frame["variant"]))}  # the spec's order
    key = frame.assign(
        _v=frame["variant"].map(variants),
        _p=frame["precision"].map(_PRECISION_ORDER).fillna(9),
        _s=frame["scaling"].map(_SCALING_ORDER).fillna(9),
    )
    return key.sort_values(["_v", "_p", "_s", "backend", "seed"]).drop(columns=["_v", "_p", "_s"])


def _present(frame: pd.DataFrame, columns: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Only the columns this run has numbers for (a floor exists for some data sets; per-cell RSS only where
    each cell had its own process), so a smoke report is not a wall of dashes."""
    return {label: (col, fmt) for label, (col, fmt) in columns.items()
            if col in frame and frame[col].notna().any()}


_OPTIONAL_MEMORY = {"peak RSS, own process (MiB)": ("derived:rss_mib", "{:.0f}")}


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
    """The task's table; unsupported cells are listed under it, not as rows of 'unsupported'.

    Rows of different data sets (a proxy and the real file, say) are never one row group: when a task's
    records name more than one data set, the table is built per data set and every row says which.
    """
    layout = LAYOUTS.get(task) if task in LAYOUTS else generic_table
    shown = frame[frame["status"] != "unsupported"]
    shown = shown if not shown.empty else frame

    def per_seed(part: pd.DataFrame) -> pd.DataFrame:
        # the task layouts do not show the seed: rows differing only by it would read as duplicates
        return _blocks(layout, part, "seed", "seed") if layout is not generic_table else layout(part)

    return _blocks(per_seed, shown, "dataset", "data set", drop="data", missing="(not recorded)")


def _blocks(layout, frame: pd.DataFrame, column: str, label: str, drop: str | None = None,
            missing: str | None = None) -> pd.DataFrame:
    """The layout once per distinct value of `column` (first-seen order), each block's rows labelled with it;
    a single value gives the layout as is."""
    values = list(dict.fromkeys(frame[column])) if column in frame else []
    if len(values) <= 1:
        return layout(frame)
    parts = []
    for value in values:
        part = layout(frame[frame[column] == value])
        if drop:
            part = part.drop(columns=[drop], errors="ignore")
        part.insert(0, label, (value or missing) if missing is not None else value)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@LAYOUTS.register("cnf-2d")
def cnf_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Like the slide: per dataset, validation NLL, fwd / bwd per iteration, total time, max memory."""
    columns = {
        "val NLL (fp32 eval)": ("metric:val_nll", "{:.3f}"),
        **_present(frame, {"± s.e.": ("metric:val_nll_stderr", "{:.3f}"),
                           "entropy H(p) (floor)": ("metric:entropy", "{:.3f}"),
                           "KL = NLL − H": ("metric:kl", "{:.3f}")}),
        "val NLL (train prec.)": ("metric:val_nll_train_precision", "{:.3f}"),
        "MMD": ("metric:mmd", "{:.2e}"),
        "fwd (s/it)": ("metric:fwd_s", "{:.3f}"),
        "bwd (s/it)": ("metric:bwd_s", "{:.3f}"),
        "total (s)": ("metric:total_s", "{:.1f}"),
        "max mem (GiB)": ("metric:peak_mem_gib", "{:.2f}"),
        "saved for bwd (MiB)": ("metric:saved_for_backward_mib", "{:.2f}"),
        **_present(frame, _OPTIONAL_MEMORY),
    }
    rows = []
    for _, row in _sorted(frame).iterrows():
        out = {"dataset": row["variant"], "precision": row["precision"], "backend": row["backend"],
               "scaling": row["scaling"]}
        out.update({label: cell_text(row, col, fmt) for label, (col, fmt) in columns.items()})
        rows.append(out)
    return pd.DataFrame(rows)


@LAYOUTS.register("otflow-bsds300")
def otflow_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Like the slide: precision × solver × scaling; val NLL, HJB, max memory, train time; the data set named."""
    columns = {
        "val NLL": ("metric:val_nll", "{:.2f}"),
        **_present(frame, {"± s.e.": ("metric:val_nll_stderr", "{:.2f}"),
                           "entropy H(p) (floor)": ("metric:entropy", "{:.2f}"),
                           "KL = NLL − H": ("metric:kl", "{:.2f}"),
                           "KL per dim": ("metric:kl_per_dim", "{:.3f}")}),
        "val L": ("metric:val_transport", "{:.3f}"),
        "HJB": ("metric:val_hjb", "{:.3f}"),
        "MMD": ("metric:mmd", "{:.2e}"),
        "max mem (GiB)": ("metric:peak_mem_gib", "{:.2f}"),
        "saved for bwd (MiB)": ("metric:saved_for_backward_mib", "{:.1f}"),
        **_present(frame, _OPTIONAL_MEMORY),
        "ms/iter": ("derived:iter_ms", "{:.1f}"),
        "train (s)": ("metric:total_s", "{:.1f}"),
    }
    frame = frame.assign(**{"derived:iter_ms": frame.get("metric:iter_s", float("nan")) * 1e3})
    rows = []
    for _, row in _sorted(frame).iterrows():
        dataset = row.get("extra:dataset")
        out = {"variant": row["variant"], "data": dataset if isinstance(dataset, str) else "–",
               "precision": row["precision"], "solver": row["backend"], "scaling": row["scaling"]}
        out.update({label: cell_text(row, col, fmt) for label, (col, fmt) in columns.items()})
        rows.append(out)
    return pd.DataFrame(rows)


def _estimator(row: pd.Series) -> str:
    name = row.get("extra:estimator")
    return name if isinstance(name, str) else "–"


def _mc_check(row: pd.Series) -> str:
    """The float64 Euler-Maruyama Monte Carlo kept beside a closed form (CEV): estimate ± s.e."""
    value = row.get("metric:mc_reference")
    if row["status"] != "ok" or value is None or pd.isna(value):
        return "–"
    return f"{value:.4f} ± {row.get('metric:mc_reference_stderr', float('nan')):.4f}"


@LAYOUTS.register("sde-adjoint-bias")
def sde_bias_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Like the slide: estimator × problem, estimate ± s.e. at the finest step count, reference, bias."""
    rows = []
    for _, row in _sorted(frame).iterrows():
        est = cell_text(row, "metric:grad_estimate", "{:.4f}")
        if row["status"] == "ok":
            est += " ± " + cell_text(row, "metric:grad_stderr", "{:.4f}")
        rows.append({
            "problem": row["variant"], "estimator": _estimator(row),
            "backend (method)": f"{row['backend']} ({row['method']})",
            "precision": row["precision"], "N": int(row["steps"]), "estimate ± s.e.": est,
            "converges to": cell_text(row, "metric:grad_expected", "{:.4f}"),
            "reference (exact)": cell_text(row, "metric:grad_reference", "{:.6f}"),
            "MC check": _mc_check(row),
            "bias": cell_text(row, "metric:bias", "{:+.4f}"),
        })
    table = pd.DataFrame(rows)
    finest = table.groupby(["problem", "backend (method)", "precision"])["N"].transform("max")
    return table[table["N"] == finest].reset_index(drop=True)


@LAYOUTS.register("soc-100d")
def soc_table(frame: pd.DataFrame) -> pd.DataFrame:
    """variant × precision: J ± s.e. of the learned feedback, the exact value, the gap, time and memory."""
    frame = frame.assign(**{"derived:iter_ms": frame.get("metric:iter_s", float("nan")) * 1e3})
    rows = []
    for _, row in _sorted(frame).iterrows():
        objective = cell_text(row, "metric:control_objective", "{:.4f}")
        if row["status"] == "ok":
            objective += " ± " + cell_text(row, "metric:control_objective_stderr", "{:.4f}")
        rows.append({
            "variant": row["variant"], "precision": row["precision"], "J ± s.e.": objective,
            "exact V(0, z0)": cell_text(row, "metric:value_reference", "{:.4f}"),
            "gap": cell_text(row, "metric:gap_rel", "{:+.2%}"),
            **({"gap closed vs u = 0": cell_text(row, "metric:gap_closed", "{:.1%}")}
               if "metric:gap_closed" in frame else {}),
            "J with u = 0": cell_text(row, "metric:uncontrolled_objective", "{:.4f}"),
            "Φθ(0, z0)": cell_text(row, "metric:value_at_start", "{:.3f}"),
            "HJB residual": cell_text(row, "metric:hjb_residual", "{:.3f}"),
            "ms/iter": cell_text(row, "derived:iter_ms", "{:.1f}"),
            "train (s)": cell_text(row, "metric:total_s", "{:.1f}"),
            "max mem (GiB)": cell_text(row, "metric:peak_mem_gib", "{:.2f}"),
            **{label: cell_text(row, col, fmt) for label, (col, fmt) in _present(frame, _OPTIONAL_MEMORY).items()},
        })
    return pd.DataFrame(rows)


# The slide's STL-10 numbers (reference mixed-precision library and torchdiffeq, H100): shown beside ours,
# labelled as published, never mixed into our columns.
_STL10_PUBLISHED = {
    ("engine", "fp32"): "acc 0.786",
    ("engine", "tf32"): "acc 0.792; 4.3 GB; fwd 0.27 s",
    ("engine", "bf16"): "acc 0.795; 2.2 GB; fwd 0.15 s",
    ("engine", "fp16"): "acc 0.778 (dynamic)",
    ("torchdiffeq", "fp32"): "21.5 GB",
    ("torchdiffeq", "fp16"): "fails (NaN even with grad scaling)",
}


@LAYOUTS.register("stl10")
def stl10_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Like the slide: precision × backend × scaling; accuracy, memory, time; the published numbers beside."""
    columns = {
        "test acc": ("metric:test_acc", "{:.3f}"),
        "val acc": ("metric:val_acc", "{:.3f}"),
        "train loss": ("metric:train_loss", "{:.3f}"),
        "max mem (GiB)": ("metric:peak_mem_gib", "{:.2f}"),
        "saved for bwd (MiB)": ("metric:saved_for_backward_mib", "{:.1f}"),
        **_present(frame, _OPTIONAL_MEMORY),
        "fwd (s/it)": ("metric:fwd_s", "{:.3f}"),
        "bwd (s/it)": ("metric:bwd_s", "{:.3f}"),
        "input (s/it)": ("metric:input_s", "{:.4f}"),
        "iterations": ("metric:iters_done", "{:.0f}"),
        "skipped": ("metric:skipped_steps", "{:.0f}"),
    }
    rows = []
    for _, row in _sorted(frame).iterrows():
        dataset = row.get("extra:dataset")
        out = {"data": dataset if isinstance(dataset, str) else "–", "precision": row["precision"],
               "backend": row["backend"], "scaling": row["scaling"]}
        out.update({label: cell_text(row, col, fmt) for label, (col, fmt) in columns.items()})
        family = "engine" if row["backend"].startswith("engine") else "torchdiffeq"
        out["published (slide, H100)"] = _STL10_PUBLISHED.get((family, row["precision"]), "")
        rows.append(out)
    return pd.DataFrame(rows)


@NOTES.register("stl10")
def stl10_notes(frame: pd.DataFrame) -> list[str]:
    """The split, and bf16 against tf32 (fp32 where there is no tf32, on a CPU) from the same run."""
    lines = ["Published column: the slide's numbers (the reference mixed-precision library on engine rows, "
             "torchdiffeq on torchdiffeq rows; full 160-epoch training on STL-10 at 128 px on an H100), shown "
             "beside ours, never compared with a proxy or a short run."]
    note = frame.get("extra:split_note")
    if note is not None and note.dropna().size:
        lines.append(f"Split: {note.dropna().iloc[0]}.")
    ok = frame[frame["status"] == "ok"]
    for backend, sub in ok.groupby("backend", sort=False):
        by_precision = {r["precision"]: r for _, r in sub[sub["scaling"] == "none"].iterrows()}
        base_name = "tf32" if "tf32" in by_precision else "fp32"
        if "bf16" not in by_precision or base_name not in by_precision:
            continue
        low, base = by_precision["bf16"], by_precision[base_name]
        parts = []
        for label, col in (("peak memory", "metric:peak_mem_gib"),
                           ("saved for backward", "metric:saved_for_backward_mib"),
                           ("forward time", "metric:fwd_s"), ("iteration time", "metric:iter_s")):
            a, b = low.get(col), base.get(col)
            if a is not None and b is not None and not pd.isna(a) and not pd.isna(b) and b:
                parts.append(f"{label} ×{a / b:.2f}")
        if parts:
            lines.append(f"{backend}, bf16 ÷ {base_name} (same run): " + ", ".join(parts) + ".")
    return lines
