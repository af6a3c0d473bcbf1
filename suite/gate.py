"""Compare two runs, or gate a run against a committed baseline: per cell, per metric, by the task's own rules.

Cells match by their key (task, variant, backend, method, steps, precision, scaling, seed, profile). For each
task the run contains: a baseline cell missing from the run is a regression, a new cell is listed, and a task
absent from the run is skipped with a note (so one task can be gated alone).

How a metric is compared is declared by its task (`AbstractTask.gate_rules`), never one tolerance for all; the
caller hands those rules in (`task_rules`: the CLI passes every registered task's, `suite.tasks.gate_rules`),
so the gate knows nothing of the tasks themselves:
- status: ok → anything else is a regression; nonfinite/error/... → ok is an improvement;
- deterministic accuracy metrics: a relative tolerance (tight by default; a spec may override it in `[gate]`);
- Monte Carlo metrics with a standard error: a z-test on the difference;
- memory: `saved_for_backward_mib` and the CUDA allocator peak, a tight factor;
- time: machines are noisy and differ, so the primary check is a *ratio inside one run* (engine ÷ torchdiffeq
  at the same precision; bf16 ÷ tf32, or ÷ fp32 where there is no tf32, for one backend) against the same
  ratio in the baseline; absolute times only between runs on the same device class, with a wide factor. Both
  only where the times are long enough to mean something (`min_time_s`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from suite.records import Status, device_classes, latest_by_cell
from suite.rules import COMMON_RULES, Rule

__all__ = ["Rule", "GateRow", "GateResult", "compare_records", "COMMON_RULES", "match_key", "TIME_TOLERANCES"]

KEY_FIELDS = ("task", "variant", "backend", "method", "steps", "precision", "scaling", "seed", "profile")


@dataclass
class GateRow:
    cell: str
    metric: str
    old: str
    new: str
    change: str
    rule: str
    verdict: Literal["ok", "regression", "improvement", "new", "skipped", "note"]
    why: str = ""


@dataclass
class GateResult:
    rows: list[GateRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[GateRow]:
        return [r for r in self.rows if r.verdict == "regression"]

    def markdown(self, title: str) -> str:
        lines = [f"## {title}", ""]
        regressions = self.regressions
        lines.append(f"**{len(regressions)} regression(s)**, {sum(r.verdict == 'improvement' for r in self.rows)} "
                     f"improvement(s), {sum(r.verdict == 'ok' for r in self.rows)} checks within tolerance, "
                     f"{sum(r.verdict == 'new' for r in self.rows)} new cell(s).")
        lines += [f"- {n}" for n in self.notes]
        shown = [r for r in self.rows if r.verdict != "ok"]
        if shown:
            lines += ["", "| verdict | cell | metric | old → new | change | rule | why |",
                      "|---|---|---|---|---|---|---|"]
            for r in sorted(shown, key=lambda r: (r.verdict != "regression", r.cell, r.metric)):
                lines.append(f"| {r.verdict} | `{r.cell}` | {r.metric} | {r.old} → {r.new} | {r.change} | "
                             f"{r.rule} | {r.why} |")
        return "\n".join(lines) + "\n"


def match_key(record: dict) -> tuple:
    """The key fields, then the engine memory setting when it is not the default (records and baselines
    from before the knob have none: they are "states")."""
    memory = record.get("memory_setting", "states")
    return tuple(record[k] for k in KEY_FIELDS) + (() if memory == "states" else (f"mem={memory}",))


def _key_text(key: tuple) -> str:
    text = "/".join(str(v) if k not in ("steps", "seed") else f"{k}={v}" for k, v in zip(KEY_FIELDS, key))
    return "/".join([text, *key[len(KEY_FIELDS):]])


def _number(value) -> float:
    if isinstance(value, str):
        return float(value)  # 'inf' / 'nan' stored as strings
    return float(value) if value is not None else math.nan


def _fmt(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


# ---------------------------------------------------------------- metric rules
def _rules_for(task_rules: Mapping[str, Rule], overrides: dict[str, float]) -> dict[str, Rule]:
    rules = {**COMMON_RULES, **task_rules}
    for metric, tolerance in overrides.items():
        if metric in rules:
            rules[metric] = rules[metric].with_tolerance(tolerance)
    return rules


def _judge(rule: Rule, old: float, new: float, old_se: float, new_se: float) -> tuple[str, str, str]:
    """(verdict, change text, why) for one metric."""
    if math.isnan(old) or math.isnan(new):
        return ("ok", "", "") if math.isnan(old) and math.isnan(new) else (
            "regression" if math.isnan(new) else "improvement", "", "became NaN" if math.isnan(new) else "")
    if rule.kind == "ztest":
        spread = math.sqrt(max(old_se, 0.0) ** 2 + max(new_se, 0.0) ** 2)
        z = (new - old) / spread if spread > 0 else (0.0 if new == old else math.inf)
        bad = abs(z) > rule.tolerance
        return ("regression" if bad else "ok", f"z = {z:+.2f}",
                f"the estimates differ by {abs(z):.1f} standard errors" if bad else "")
    if rule.kind == "factor":
        ratio = new / old if old else (1.0 if new == old else math.inf)
        worse = ratio > rule.tolerance if rule.direction == "lower" else ratio < 1 / rule.tolerance
        better = ratio < 1 / rule.tolerance if rule.direction == "lower" else ratio > rule.tolerance
        return ("regression" if worse else "improvement" if better else "ok", f"×{ratio:.3g}",
                f"beyond the factor {rule.tolerance:g}" if worse else "")
    delta = new - old
    limit = rule.tolerance * abs(old) + rule.atol
    change = f"{delta / abs(old):+.1%}" if old else f"{delta:+.3g}"
    if abs(delta) <= limit:
        return "ok", change, ""
    worse = delta > 0 if rule.direction == "lower" else delta < 0 if rule.direction == "higher" else True
    return ("regression" if worse else "improvement", change,
            f"moved {'up' if delta > 0 else 'down'} beyond ±{rule.tolerance:.0%}" if worse else "")


def _metric_rows(name: str, rules: dict[str, Rule], old: dict, new: dict) -> Iterable[GateRow]:
    metrics_old, metrics_new = old["metrics"], new["metrics"]
    for metric, rule in rules.items():
        if metric not in metrics_old and metric not in metrics_new:
            continue
        a, b = _number(metrics_old.get(metric)), _number(metrics_new.get(metric))
        if metric == "peak_mem_gib" and old["device"] != "cuda":
            continue  # a CPU has no per-cell allocator peak
        se_a = _number(metrics_old.get(rule.stderr)) if rule.stderr else 0.0
        se_b = _number(metrics_new.get(rule.stderr)) if rule.stderr else 0.0
        if metric in metrics_old and metric not in metrics_new:
            yield GateRow(name, metric, _fmt(a), "missing", "", rule.describe(), "regression",
                          "the metric is no longer recorded")
            continue
        verdict, change, why = _judge(rule, a, b, se_a, se_b)
        yield GateRow(name, metric, _fmt(a), _fmt(b), change, rule.describe(), verdict, why)


def _status_row(name: str, old: dict, new: dict) -> GateRow | None:
    a, b = old["status"], new["status"]
    if a == b:
        if a == Status.UNSUPPORTED.value and old["reason"] != new["reason"]:
            return GateRow(name, "status", a, b, "", "status", "note", f"reason changed: {new['reason']}")
        return None
    if a == Status.OK.value:
        return GateRow(name, "status", a, b, "", "ok stays ok", "regression", new["reason"] or "status changed")
    if b == Status.OK.value:
        return GateRow(name, "status", a, b, "", "ok stays ok", "improvement", "now ok")
    return GateRow(name, "status", a, b, "", "status", "note", new["reason"])


# ---------------------------------------------------------------- time
def _time(record: dict) -> float:
    value = record["metrics"].get("iter_s", record["timing"].get("total_s"))
    return _number(value)


def _partners(cells: dict[tuple, dict]) -> dict[tuple, dict[str, tuple]]:
    """Per cell key: the keys its time is divided by inside the run ('engine/torchdiffeq', 'bf16/tf32')."""
    index = {k: i for i, k in enumerate(KEY_FIELDS)}
    out: dict[tuple, dict[str, tuple]] = {}
    for key in cells:
        pairs = {}
        backend, precision, scaling = key[index["backend"]], key[index["precision"]], key[index["scaling"]]
        if backend.startswith("engine"):
            partner = list(key)
            partner[index["backend"]] = "torchdiffeq"
            partner[index["scaling"]] = {"dynamic": "grad"}.get(scaling, scaling)
            if tuple(partner) in cells:
                pairs[f"time {backend} ÷ torchdiffeq"] = tuple(partner)
        if precision == "bf16":
            for base in ("tf32", "fp32"):
                partner = list(key)
                partner[index["precision"]] = base
                if tuple(partner) in cells and cells[tuple(partner)]["status"] == Status.OK.value:
                    pairs[f"time bf16 ÷ {base}"] = tuple(partner)
                    break
        out[key] = pairs
    return out


def _time_rows(old_cells, new_cells, same_device: bool, factor: float, absolute_factor: float, min_time_s: float):
    new_pairs = _partners(new_cells)
    for key, pairs in new_pairs.items():
        if key not in old_cells or new_cells[key]["status"] != "ok" or old_cells[key]["status"] != "ok":
            continue
        name = _key_text(key)
        for label, partner in pairs.items():
            if partner not in old_cells or old_cells[partner]["status"] != "ok":
                continue
            times = [_time(new_cells[key]), _time(new_cells[partner]), _time(old_cells[key]), _time(old_cells[partner])]
            if any(math.isnan(x) for x in times) or min(times) < min_time_s:
                continue
            new_ratio, old_ratio = times[0] / times[1], times[2] / times[3]
            verdict, change, why = _judge(Rule("factor", "lower", factor), old_ratio, new_ratio, 0, 0)
            yield GateRow(name, label, f"{old_ratio:.3g}", f"{new_ratio:.3g}", change, f"ratio ×{factor:g}",
                          verdict, why)
        if same_device:
            a, b = _time(old_cells[key]), _time(new_cells[key])
            if not (math.isnan(a) or math.isnan(b)) and min(a, b) >= min_time_s:
                verdict, change, why = _judge(Rule("factor", "lower", absolute_factor), a, b, 0, 0)
                yield GateRow(name, "time (absolute)", f"{a:.3g}s", f"{b:.3g}s", change,
                              f"×{absolute_factor:g}, same device class", verdict, why)


# ---------------------------------------------------------------- compare
# Time tolerances by device type, measured: two smoke runs of the whole suite on one 2-core CPU differed by up
# to ×1.6 in within-run ratios and ×1.8 in absolute times, with every other metric bit for bit equal.
TIME_TOLERANCES = {
    "cpu": {"time_factor": 2.5, "absolute_time_factor": 5.0, "min_time_s": 0.05},
    "cuda": {"time_factor": 1.5, "absolute_time_factor": 3.0, "min_time_s": 0.005},
}


def compare_records(old: list[dict], new: list[dict], tasks: list[str] | None = None,
                    overrides: dict[str, dict[str, float]] | None = None, time_factor: float | None = None,
                    absolute_time_factor: float | None = None, min_time_s: float | None = None, *,
                    task_rules: Mapping[str, Mapping[str, Rule]]) -> GateResult:
    """The gate's verdicts for `new` against `old` (both lists of records; the latest record per cell counts).

    `task_rules`: task → its metric rules (a task without an entry gets COMMON_RULES only). Time tolerances
    default by device type (TIME_TOLERANCES)."""
    overrides = overrides or {}
    device = "cuda" if any(r["device"] == "cuda" and r["status"] == "ok" for r in new) else "cpu"
    defaults = TIME_TOLERANCES[device]
    time_factor = time_factor or defaults["time_factor"]
    absolute_time_factor = absolute_time_factor or defaults["absolute_time_factor"]
    min_time_s = defaults["min_time_s"] if min_time_s is None else min_time_s
    old_cells = {match_key(r): r for r in latest_by_cell(old).values()}
    new_cells = {match_key(r): r for r in latest_by_cell(new).values()}
    run_tasks = {k[0] for k in new_cells}
    wanted = set(tasks) if tasks else run_tasks
    result = GateResult()
    for task in sorted({k[0] for k in old_cells} - run_tasks):
        if not tasks or task in wanted:
            result.notes.append(f"task {task} is not in the run: skipped (gate it with a run that has it)")
    old_cells = {k: v for k, v in old_cells.items() if k[0] in wanted and k[0] in run_tasks}
    new_cells = {k: v for k, v in new_cells.items() if k[0] in wanted}
    same_device = device_classes(old_cells.values()) == device_classes(new_cells.values())
    if not same_device:
        result.notes.append("the runs come from different device classes "
                            f"({', '.join(sorted(device_classes(old_cells.values())))} vs "
                            f"{', '.join(sorted(device_classes(new_cells.values())))}): times are not compared")
    for key, record in sorted(old_cells.items(), key=lambda kv: _key_text(kv[0])):
        name = _key_text(key)
        if key not in new_cells:
            result.rows.append(GateRow(name, "cell", record["status"], "missing", "", "every baseline cell runs",
                                       "regression", "the baseline has this cell; the run does not"))
            continue
        status = _status_row(name, record, new_cells[key])
        if status is not None:
            result.rows.append(status)
        if record["status"] == "ok" and new_cells[key]["status"] == "ok":
            rules = _rules_for(task_rules.get(key[0], {}), overrides.get(key[0], {}))
            result.rows += list(_metric_rows(name, rules, record, new_cells[key]))
    for key in sorted(set(new_cells) - set(old_cells), key=_key_text):
        result.rows.append(GateRow(_key_text(key), "cell", "–", new_cells[key]["status"], "", "", "new",
                                   "not in the baseline"))
    if same_device:
        result.rows += list(_time_rows(old_cells, new_cells, True, time_factor, absolute_time_factor, min_time_s))
    return result
