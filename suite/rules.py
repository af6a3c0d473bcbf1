"""How a gated metric is compared (`Rule`) and the rules every task gets: a leaf module, so the tasks that
declare their rules and the gate that applies them both import it, and neither imports the other's way up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Rule", "COMMON_RULES"]


@dataclass(frozen=True)
class Rule:
    """How one metric is compared. kind: relative | ztest | factor; direction: which way is better."""

    kind: Literal["relative", "ztest", "factor"]
    direction: Literal["lower", "higher", "both"] = "lower"
    tolerance: float = 0.05  # relative: |Δ|/|old|; ztest: z; factor: new/old
    atol: float = 0.0  # relative: changes below this never count
    stderr: str | None = None  # ztest: the metric holding the standard error

    def with_tolerance(self, tolerance: float) -> Rule:
        return Rule(self.kind, self.direction, tolerance, self.atol, self.stderr)

    def describe(self) -> str:
        if self.kind == "relative":
            return f"±{self.tolerance:.0%} relative" + (f" (+{self.atol:g})" if self.atol else "")
        if self.kind == "ztest":
            return f"|z| ≤ {self.tolerance:g} (s.e. {self.stderr})"
        return f"×{self.tolerance:g}"


# Rules every task gets: memory is deterministic enough for a tight factor.
COMMON_RULES = {
    "saved_for_backward_mib": Rule("factor", "lower", 1.05),
    "peak_mem_gib": Rule("factor", "lower", 1.10),
}
