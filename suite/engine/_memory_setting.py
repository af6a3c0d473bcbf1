"""The memory knob's value: which of "states", "stages", "checkpoint:K" a solve uses (see _memory.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MEMORY_SETTINGS", "MemoryPlan", "parse_memory"]

MEMORY_SETTINGS = ("states", "stages", "checkpoint", "checkpoint:K")


@dataclass(frozen=True)
class MemoryPlan:
    kind: str  # states | stages | checkpoint
    every: int | None = None  # checkpoint: K (None: ⌈√n⌉, decided per solve)

    def interval(self, n_steps: int) -> int:
        return self.every if self.every is not None else max(1, math.ceil(math.sqrt(n_steps)))

    def __str__(self) -> str:
        return self.kind if self.kind != "checkpoint" or self.every is None else f"checkpoint:{self.every}"


def parse_memory(value: str | MemoryPlan) -> MemoryPlan:
    """'states', 'stages', 'checkpoint' or 'checkpoint:K' (K ≥ 1 steps between kept states)."""
    if isinstance(value, MemoryPlan):
        return value
    allowed = "'states', 'stages', 'checkpoint' (every ⌈√n⌉ steps) or 'checkpoint:K' with an integer K ≥ 1"
    if not isinstance(value, str):
        raise TypeError(f"memory={value!r}; expected {allowed}")
    kind, _, every = value.partition(":")
    if kind in ("states", "stages") and not every:
        return MemoryPlan(kind)
    if kind == "checkpoint":
        if not every:
            return MemoryPlan(kind)
        if every.isdigit() and int(every) >= 1:
            return MemoryPlan(kind, int(every))
    raise ValueError(f"memory={value!r}; valid: {allowed}")
