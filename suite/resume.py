"""The resume rule: which cells of a matrix a resumed run runs again, and when it refuses.

A cell runs again when it has no record, when its spec changed, or when its latest record ended in
`error`; `retry_failed` also re-runs nonfinite, oom and timeout cells; an unsupported cell runs again only
when the reason changed (a dependency was installed). A recorded cell whose inputs (data set and its
fingerprint, device class, torch build) differ from what it would use now is never silently kept or
mixed: the run refuses, or re-runs those cells with `rerun_changed`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from suite.cell import cell_inputs, unsupported_reason
from suite.records import Status, latest_by_cell
from suite.spec import Cell

__all__ = ["ResumePlan", "ResumeMismatch", "plan_resume", "NOT_KNOWABLE_HERE", "RERUN_ALWAYS", "RERUN_ON_RETRY"]

# Which statuses a resume runs again: `error` always (a bug or bad data, worth another try once fixed);
# the findings and resource failures only when asked (`retry_failed`).
RERUN_ALWAYS = frozenset({Status.ERROR.value})
RERUN_ON_RETRY = frozenset({Status.NONFINITE.value, Status.OOM.value, Status.TIMEOUT.value})


class ResumeMismatch(ValueError):
    """Recorded cells used other inputs (data set, device, torch build) than they would use now."""


@dataclass
class ResumePlan:
    todo: list[Cell]
    kept: Counter = field(default_factory=Counter)  # status → cells kept from earlier records
    mismatched: list[tuple[Cell, dict, dict]] = field(default_factory=list)  # (cell, recorded, now)


# An input the resuming machine cannot know (a SLURM login node without the compute nodes' GPUs): not compared.
NOT_KNOWABLE_HERE = "(not knowable on this machine)"


def _differences(recorded: dict, now: dict) -> dict[str, tuple[str, str]]:
    keys = sorted(set(recorded) | set(now))
    return {k: (recorded.get(k, "(not recorded)"), now.get(k, "(none)")) for k in keys
            if recorded.get(k) != now.get(k) and now.get(k) != NOT_KNOWABLE_HERE}


def plan_resume(cells: list[Cell], records: list[dict], retry_failed: bool = False, rerun_changed: bool = False,
                inputs: Callable[[Cell], dict] = cell_inputs) -> ResumePlan:
    """Which cells a resumed run runs again (see the module docstring for the rules)."""
    latest = latest_by_cell(records)
    rerun = RERUN_ALWAYS | (RERUN_ON_RETRY if retry_failed else frozenset())
    plan = ResumePlan(todo=[])
    for cell in cells:
        record = latest.get(cell.cell_id)
        if record is None or record["spec_hash"] != cell.spec_hash or record["status"] in rerun:
            plan.todo.append(cell)
            continue
        if record["status"] == Status.UNSUPPORTED.value:
            if unsupported_reason(cell) != record["reason"]:
                plan.todo.append(cell)  # something changed: a dependency was installed, another device
            else:
                plan.kept[record["status"]] += 1
            continue
        now = inputs(cell)
        if _differences(record["inputs"], now):
            plan.mismatched.append((cell, record["inputs"], now))
            if rerun_changed:
                plan.todo.append(cell)
            continue
        plan.kept[record["status"]] += 1
    if plan.mismatched and not rerun_changed:
        raise ResumeMismatch(_mismatch_message(plan.mismatched))
    return plan


def _mismatch_message(mismatched: list[tuple[Cell, dict, dict]]) -> str:
    cell, recorded, now = mismatched[0]
    diff = "; ".join(f"{k}: recorded {a!r}, now {b!r}" for k, (a, b) in _differences(recorded, now).items())
    more = f" (and {len(mismatched) - 1} more cell(s))" if len(mismatched) > 1 else ""
    return (f"cannot resume: {cell.cell_id}{more} was recorded with other inputs than it would use now — {diff}. "
            "Resuming would mix them in one table. Run into a new --out, restore the old inputs, or add "
            "--rerun-changed to run those cells again here (their new records supersede the old ones).")
