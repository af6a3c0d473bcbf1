"""Per-task figures, saved next to the tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from suite.references.toy2d_entropy import log_density
from suite.registry import Registry

__all__ = ["PLOTS", "pyplot", "with_artifact", "missing_artifacts"]

Plot = Callable[[pd.DataFrame, Path, Path], list[Path]]  # (cells of one task, report dir, run dir)
PLOTS: Registry[Plot] = Registry("report plot")


def with_artifact(cells: pd.DataFrame, name: str, run_dir: Path) -> pd.DataFrame:
    """The ok cells whose artifact `name` is on disk (a run copied without artifacts/ has none of them)."""
    column = f"artifact:{name}"
    if column not in cells:
        return cells.iloc[0:0]
    keep = [(row["status"] == "ok" and isinstance(row[column], str) and (run_dir / row[column]).is_file())
            for _, row in cells.iterrows()]
    return cells[keep]


def missing_artifacts(cells: pd.DataFrame, run_dir: Path) -> dict[str, int]:
    """artifact kind → how many of the files the cells' records name are not on disk."""
    missing: dict[str, int] = {}
    for column in (c for c in cells.columns if c.startswith("artifact:")):
        for value in cells[column]:
            if isinstance(value, str) and not (run_dir / value).is_file():
                kind = column.split(":", 1)[1]
                missing[kind] = missing.get(kind, 0) + 1
    return missing


def pyplot():
    """matplotlib on the file-only Agg backend, imported on first use (0.7 s measured on the CI machine,
    which the CLI's other commands do not pay)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@PLOTS.register("stiff-rk4")
def stiff_plot(frame: pd.DataFrame, out_dir: Path, run_dir: Path) -> list[Path]:
    """Relative errors per configuration on a log axis; failed cells drawn as labelled gaps."""
    import seaborn as sns

    plt = pyplot()
    labels = {"metric:rel_err_y_T": "y(T)", "metric:rel_err_grad_y0": "∂y0", "metric:rel_err_grad_theta1": "∂θ1"}
    paths = []
    for variant, sub in frame.groupby("variant", sort=False):
        sub = sub[sub["status"] != "unsupported"].copy()
        if sub.empty:
            continue
        sub["config"] = sub["precision"] + " " + sub["scaling"] + "\n" + sub["backend"].str.replace("-", "-\n")
        long = sub.melt(id_vars=["config", "status"], value_vars=[c for c in labels if c in sub],
                        var_name="quantity", value_name="relative error")
        long["quantity"] = long["quantity"].map(labels)
        long.loc[long["status"] != "ok", "relative error"] = float("nan")
        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * sub["config"].nunique()), 4.2))
        sns.barplot(data=long, x="config", y="relative error", hue="quantity", ax=ax)
        ax.set_yscale("log")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        for k, (_, row) in enumerate(sub.drop_duplicates("config").iterrows()):
            if row["status"] != "ok":
                ax.text(k, 1.0, f"fails\n({row['status']})", ha="center", va="bottom", fontsize=7, color="crimson")
        ax.set_xlabel("")
        ax.set_title(f"stiff-rk4 ({variant}): relative error vs float64 closed form")
        ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        path = out_dir / f"stiff-rk4-{variant}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


TRUE_DENSITY = "true p(x)\n(exact)"


def _true_density(ax, dataset: str, cells: pd.DataFrame, run_dir: Path, title: bool) -> None:
    """The data density itself (suite/references/toy2d_entropy.py), on the grid of the learned ones."""
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(TRUE_DENSITY, fontsize=6)
    ax.set_ylabel(dataset, fontsize=7)
    paths = [p for p in cells.get("artifact:density", pd.Series(dtype=object)) if isinstance(p, str)
             and (run_dir / p).exists()]
    if not paths:
        ax.axis("off")
        return
    data = np.load(run_dir / paths[0])
    x0, x1, y0, y1 = (float(v) for v in data["extent"])
    n = data["log_density"].shape[0]
    xs, ys = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    try:
        logp = log_density(dataset, np.stack([xs.ravel(), ys.ravel()], 1)).reshape(n, n)
    except ValueError:  # a variant that is not one of the toy generators: nothing exact to draw
        ax.axis("off")
        return
    ax.imshow(np.exp(logp), origin="lower", extent=(x0, x1, y0, y1), cmap="magma")


@PLOTS.register("cnf-2d")
def cnf_density_grid(frame: pd.DataFrame, out_dir: Path, run_dir: Path) -> list[Path]:
    """Learned densities: one row per dataset, one column per precision × scaling × backend."""
    plt = pyplot()
    cells = frame[frame["status"] != "unsupported"].copy()
    if cells.empty or with_artifact(cells, "density", run_dir).empty:
        return []  # no learned density on disk (failed cells only, or records without artifacts/)
    cells["config"] = cells["precision"] + " " + cells["scaling"] + "\n" + cells["backend"]
    datasets = list(dict.fromkeys(cells["variant"]))
    configs = [TRUE_DENSITY, *dict.fromkeys(cells["config"])]
    fig, axes = plt.subplots(len(datasets), len(configs), figsize=(1.6 * len(configs), 1.7 * len(datasets)),
                             squeeze=False)
    for i, dataset in enumerate(datasets):
        _true_density(axes[i][0], dataset, cells[cells["variant"] == dataset], run_dir, i == 0)
        for j, config in enumerate(configs[1:], start=1):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            match = cells[(cells["variant"] == dataset) & (cells["config"] == config)]
            if i == 0:
                ax.set_title(config, fontsize=6)
            if j == 0:
                ax.set_ylabel(dataset, fontsize=7)
            if match.empty:
                ax.axis("off")
                continue
            row = match.iloc[0]
            path = row.get("artifact:density")
            if row["status"] != "ok":
                ax.text(0.5, 0.5, f"fails\n({row['status']})", ha="center", va="center", color="crimson",
                        fontsize=7, transform=ax.transAxes)
                continue
            if not isinstance(path, str) or not (run_dir / path).is_file():
                ax.text(0.5, 0.5, "density file\nnot in artifacts/", ha="center", va="center", color="grey",
                        fontsize=6, transform=ax.transAxes)
                continue
            data = np.load(run_dir / path)
            ax.imshow(np.exp(data["log_density"]), origin="lower", extent=tuple(data["extent"]), cmap="magma")
    fig.suptitle("cnf-2d: the data density and the learned ones (fp32 evaluation)", fontsize=9)
    fig.tight_layout()
    target = out_dir / "cnf-2d-densities.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return [target]


@PLOTS.register("sde-adjoint-bias")
def sde_bias_convergence(frame: pd.DataFrame, out_dir: Path, run_dir: Path) -> list[Path]:
    """Estimates ± 2 s.e. against the number of steps N, per problem; the reference as a line."""
    plt = pyplot()
    cells = frame[frame["status"] == "ok"]
    if cells.empty:
        return []
    problems = list(dict.fromkeys(cells["variant"]))
    fig, axes = plt.subplots(1, len(problems), figsize=(6.0 * len(problems), 4.2), squeeze=False)
    for ax, problem in zip(axes[0], problems):
        sub = cells[cells["variant"] == problem]
        for (backend, method, precision), g in sub.groupby(["backend", "method", "precision"], sort=False):
            g = g.sort_values("steps")
            ax.errorbar(g["steps"], g["metric:grad_estimate"], yerr=2 * g["metric:grad_stderr"], marker="o",
                        ms=3, capsize=2, label=f"{backend} ({method}, {precision})")
        ax.axhline(sub["metric:grad_reference"].iloc[0], color="black", lw=1, ls="--", label="reference")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("steps N")
        ax.set_ylabel("dJ/dx0 estimate (± 2 s.e.)")
        ax.set_title(f"sde-adjoint-bias: {problem}")
        ax.legend(fontsize=6)
    fig.tight_layout()
    target = out_dir / "sde-adjoint-bias-convergence.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return [target]


@PLOTS.register("soc-100d")
def soc_curves(frame: pd.DataFrame, out_dir: Path, run_dir: Path) -> list[Path]:
    """Control objective vs iteration (PMP feedback vs random-walk training) against the exact value, and a
    2-D projection (first two coordinates) of evaluation trajectories heading for x_ref."""
    plt = pyplot()
    cells = with_artifact(frame, "curves", run_dir)
    if cells.empty:
        return []
    problems = list(dict.fromkeys(cells["variant"].str.replace("-random-walk", "", regex=False)))
    fig, axes = plt.subplots(2, len(problems), figsize=(4.5 * len(problems), 7.5), squeeze=False)
    for k, problem in enumerate(problems):
        ax_curve, ax_path = axes[0][k], axes[1][k]
        sub = cells[cells["variant"].str.replace("-random-walk", "", regex=False) == problem]
        for _, row in sub.iterrows():
            data = np.load(run_dir / row["artifact:curves"])
            ax_curve.plot(data["iterations"], data["objective"], marker="o", ms=2,
                          label=f"{row['variant']} ({row['precision']})")
            reference = float(data["reference"])
            if row["precision"] in ("fp32", "tf32") and row["variant"] == problem:
                paths = data["trajectories_xy"]
                ax_path.plot(paths[:, :, 0], paths[:, :, 1], lw=0.6, alpha=0.5)
                ax_path.scatter([float(data["x_ref"])], [float(data["x_ref"])], marker="*", s=120, color="black")
        ax_curve.axhline(reference, color="black", ls="--", lw=1, label="exact value")
        ax_curve.set_title(f"soc-100d: {problem}")
        ax_curve.set_xlabel("iteration")
        ax_curve.set_ylabel("control objective J")
        ax_curve.legend(fontsize=6)
        ax_path.set_title("trajectories, coordinates 1-2 (target ★)", fontsize=9)
    fig.tight_layout()
    target = out_dir / "soc-100d-curves.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return [target]


@PLOTS.register("stl10")
def stl10_curves(frame: pd.DataFrame, out_dir: Path, run_dir: Path) -> list[Path]:
    """Training loss against wall-clock time, as the slide: solid engine, dashed torchdiffeq, one colour per
    precision (failed cells are not drawn; the table lists them)."""
    plt = pyplot()
    cells = with_artifact(frame, "curve", run_dir)
    if cells.empty:
        return []
    colours = {"fp32": "tab:blue", "tf32": "tab:green", "bf16": "tab:orange", "fp16": "tab:red"}
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for _, row in cells.iterrows():
        data = np.load(run_dir / row["artifact:curve"])
        style = "-" if row["backend"].startswith("engine") else "--"
        ax.plot(data["wall_s"], data["loss"], ls=style, color=colours.get(row["precision"], "grey"), lw=1,
                label=f"{row['backend']} {row['precision']} {row['scaling']}")
    ax.set_xlabel("wall-clock time (s)")
    ax.set_ylabel("training loss")
    ax.set_title("stl10: training loss (solid: engine, dashed: torchdiffeq)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    target = out_dir / "stl10-loss.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return [target]
