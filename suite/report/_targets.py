"""Time to target (MLCommons AlgoPerf's time-to-result) from the learning curves in the records.

A training cell's record carries `extra.curve`: its validation metric at iterations, with the training
seconds spent so far (evaluation excluded) and the task's CurveSpec (metric, direction, tolerance). For each
group of cells that share a task, variant, data set, method, steps and profile, the target is the fp32
engine row's final curve value (the median over seeds when there are several), loosened by the tolerance on
the worse side. Every row then records the first iteration, and its training seconds, at which its curve
reached the target; a row that never does, or whose curve went non-finite before it did, is "not reached",
never a number. A cell that failed later (its status says so) keeps the point it reached before failing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

__all__ = ["Reach", "first_reach", "target_value", "curve_of", "time_to_target_frame", "GROUP_KEYS"]

GROUP_KEYS = ("task", "variant", "dataset", "method", "steps", "profile", "device")
REFERENCE_ROW = {"backend": "engine", "precision": "fp32", "scaling": "none"}


@dataclass(frozen=True)
class Reach:
    iteration: int
    train_s: float


def _value(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def curve_of(record: dict) -> dict | None:
    """The record's learning curve with numeric values ('nan' strings from JSON made floats), or None."""
    curve = (record.get("extra") or {}).get("curve")
    if not isinstance(curve, dict) or not curve.get("iteration"):
        return None
    return {**curve, "iteration": [int(i) for i in curve["iteration"]],
            "train_s": [_value(v) for v in curve["train_s"]], "value": [_value(v) for v in curve["value"]]}


def target_value(final: float, direction: str, tolerance: float, relative: bool = False) -> float:
    """The reference row's final value, loosened by the tolerance on the worse side."""
    slack = tolerance * abs(final) if relative else tolerance
    return final + slack if direction == "lower" else final - slack


def first_reach(iterations: Iterable[int], train_s: Iterable[float], values: Iterable[float], target: float,
                direction: str) -> Reach | None:
    """The first curve point at or better than `target`; None if none, or if the curve went non-finite first
    (a diverged run that later prints a lucky number has not reached anything)."""
    if direction not in ("lower", "higher") or not math.isfinite(target):
        raise ValueError(f"direction must be 'lower' or 'higher' and the target finite, got {direction!r}, {target}")
    for it, seconds, value in zip(iterations, train_s, values):
        if not math.isfinite(value):
            return None
        if (value <= target) if direction == "lower" else (value >= target):
            return Reach(int(it), float(seconds))
    return None


def _group(record: dict) -> tuple:
    dataset = (record.get("inputs") or {}).get("dataset", "")
    return tuple(dataset if k == "dataset" else record.get(k) for k in GROUP_KEYS)


def _is_reference(record: dict) -> bool:
    return all(record.get(k) == v for k, v in REFERENCE_ROW.items())


def time_to_target_frame(records: list[dict]) -> pd.DataFrame:
    """One row per training cell with a curve: its target, where it reached it, and the ratio of its time to
    the fp32 engine row's (the latest record of each cell counts)."""
    latest: dict[str, dict] = {}
    for r in records:
        latest[r["cell_id"]] = r
    groups: dict[tuple, list[dict]] = {}
    for r in latest.values():
        if curve_of(r) is not None:
            groups.setdefault(_group(r), []).append(r)
    rows = []
    for key, members in groups.items():
        references = [r for r in members if _is_reference(r) and r["status"] == "ok" and curve_of(r)]
        finals = [curve_of(r)["value"][-1] for r in references]
        finals = [v for v in finals if math.isfinite(v)]
        spec = curve_of(members[0]) or {}
        target = (target_value(statistics.median(finals), spec["direction"], spec["tolerance"], spec["relative"])
                  if finals else math.nan)
        ref_reach = [first_reach(c["iteration"], c["train_s"], c["value"], target, c["direction"])
                     for c in (curve_of(r) for r in references)] if finals else []
        ref_s = statistics.median([x.train_s for x in ref_reach if x is not None]) if any(ref_reach) else math.nan
        for r in members:
            curve = curve_of(r)
            reach = None
            if curve is not None and math.isfinite(target):  # a failed cell may have reached it before failing
                reach = first_reach(curve["iteration"], curve["train_s"], curve["value"], target, curve["direction"])
            rows.append({
                **dict(zip(GROUP_KEYS, key)), "backend": r["backend"], "precision": r["precision"],
                "scaling": r["scaling"], "seed": r["seed"], "status": r["status"], "cell_id": r["cell_id"],
                "metric": spec.get("metric", ""), "target": target,
                "final": curve["value"][-1] if curve else math.nan,
                "reached_iteration": reach.iteration if reach else None,
                "reached_s": reach.train_s if reach else None,
                "ratio_to_fp32_engine": (reach.train_s / ref_s if reach and math.isfinite(ref_s) and ref_s > 0
                                         else None),
            })
    return pd.DataFrame(rows)
