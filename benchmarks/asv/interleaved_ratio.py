"""One number from two timed sides, measured inside one benchmark call: what a shared machine cannot fake.

An absolute time on a loaded 2-core machine moves by ×1.5 between runs; the ratio of two sides timed in the
same process, in alternating order (A B, then B A, ...) over several rounds, does not: the load of a round
hits both of its sides alike, and the median over rounds drops a round that the load split unevenly. This
is what the regression gate does with times (ratios inside one run), here for asv's `track_*` benchmarks.

Kept beside the benchmarks (not in `suite`): asv runs the current benchmarks against older commits, whose
`suite` does not have it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RatioRefused", "Ratio", "interleaved_ratio"]


class RatioRefused(RuntimeError):
    """One side failed (raised, or returned a non-finite value), or its clock said nothing: no ratio."""


@dataclass(frozen=True)
class Ratio:
    """The median over rounds of numerator time ÷ denominator time, and what it was made of."""

    median: float
    per_round: tuple[float, ...]
    numerator_s: tuple[float, ...]
    denominator_s: tuple[float, ...]

    @property
    def spread(self) -> float:
        """Largest ÷ smallest per-round ratio: how much the rounds disagreed (1.0: not at all)."""
        return max(self.per_round) / min(self.per_round)


def _finite(value: object) -> bool:
    """A side's return value is a failure when it is a non-finite number or tensor (a NaN loss)."""
    if value is None:
        return True
    if isinstance(value, float | int):
        return math.isfinite(value)
    isfinite = getattr(value, "isfinite", None)
    if callable(isfinite):
        result = isfinite()
        return bool(result.all()) if hasattr(result, "all") else bool(result)
    return True


def _call(name: str, side: Callable[[], object]) -> None:
    try:
        value = side()
    except Exception as exc:  # noqa: BLE001 — any failure of a side refuses the ratio, naming it
        raise RatioRefused(f"the {name} side failed: {type(exc).__name__}: {exc}") from exc
    if not _finite(value):
        raise RatioRefused(f"the {name} side returned a non-finite value ({value!r})")


def _timed(name: str, side: Callable[[], object], number: int, clock: Callable[[], float]) -> float:
    start = clock()
    for _ in range(number):
        _call(name, side)
    elapsed = clock() - start
    if not (elapsed > 0 and math.isfinite(elapsed)):
        raise RatioRefused(f"the {name} side took {elapsed!r} s by the clock: nothing to divide")
    return elapsed / number


def interleaved_ratio(numerator: Callable[[], object], denominator: Callable[[], object], *, rounds: int = 7,
                      number: int = 3, warmup: int = 1,
                      clock: Callable[[], float] = time.perf_counter) -> Ratio:
    """Time `numerator` and `denominator` (`number` calls each) in alternating order for `rounds` rounds.

    Each side first runs `warmup` times untimed (caches, allocator, lazy registrations). A side that raises
    or returns a non-finite value ends the measurement with RatioRefused: a ratio against a failure is no
    number at all.
    """
    if rounds < 1 or number < 1 or warmup < 0:
        raise ValueError(f"rounds and number must be at least 1 and warmup at least 0, got rounds={rounds}, "
                         f"number={number}, warmup={warmup}")
    sides = {"numerator": numerator, "denominator": denominator}
    for name, side in sides.items():
        for _ in range(warmup):
            _call(name, side)
    times: dict[str, list[float]] = {"numerator": [], "denominator": []}
    for round_index in range(rounds):
        order = ("numerator", "denominator") if round_index % 2 == 0 else ("denominator", "numerator")
        for name in order:
            times[name].append(_timed(name, sides[name], number, clock))
    per_round = tuple(n / d for n, d in zip(times["numerator"], times["denominator"]))
    return Ratio(median=statistics.median(per_round), per_round=per_round,
                 numerator_s=tuple(times["numerator"]), denominator_s=tuple(times["denominator"]))
