"""Explicit Runge-Kutta methods as Butcher tableaux: data that checks itself when it is built."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction

from suite.registry import Registry

__all__ = ["ButcherTableau", "METHODS", "get_method"]

_Number = Fraction | int


def _f(x: str | int) -> Fraction:
    return Fraction(x)


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit RK scheme: stage k_j = f(t + c_j h, y + h Σ_l a_jl k_l), step y' = y + h Σ_j b_j k_j.

    Entries are exact fractions so that the consistency checks below are exact, not rounded.
    """

    name: str
    order: int
    c: tuple[Fraction, ...]
    a: tuple[tuple[Fraction, ...], ...]
    b: tuple[Fraction, ...]
    description: str = ""

    def __post_init__(self) -> None:
        s = len(self.b)
        if len(self.c) != s or len(self.a) != s:
            raise ValueError(f"tableau {self.name}: c, a and b must have {s} rows")
        for j, row in enumerate(self.a):
            if len(row) != j:
                raise ValueError(f"tableau {self.name}: row {j} of a must have {j} entries (explicit method)")
            if sum(row, Fraction(0)) != self.c[j]:
                raise ValueError(f"tableau {self.name}: row sum of a[{j}] != c[{j}]")
        if sum(self.b, Fraction(0)) != 1:
            raise ValueError(f"tableau {self.name}: weights b must sum to 1")
        # Second-order condition Σ b_j c_j = 1/2 where the claimed order needs it.
        if self.order >= 2 and sum((bj * cj for bj, cj in zip(self.b, self.c)), Fraction(0)) != Fraction(1, 2):
            raise ValueError(f"tableau {self.name}: claims order {self.order} but Σ b c != 1/2")
        if self.order >= 3 and sum((bj * cj * cj for bj, cj in zip(self.b, self.c)), Fraction(0)) != Fraction(1, 3):
            raise ValueError(f"tableau {self.name}: claims order {self.order} but Σ b c² != 1/3")
        if self.order >= 4 and sum((bj * cj**3 for bj, cj in zip(self.b, self.c)), Fraction(0)) != Fraction(1, 4):
            raise ValueError(f"tableau {self.name}: claims order {self.order} but Σ b c³ != 1/4")

    @property
    def n_stages(self) -> int:
        return len(self.b)

    @functools.cached_property
    def _float_coefficients(self) -> tuple[list[float], list[list[float]], list[float]]:
        return [float(x) for x in self.c], [[float(x) for x in row] for row in self.a], [float(x) for x in self.b]

    def floats(self) -> tuple[list[float], list[list[float]], list[float]]:
        """(c, a, b) as Python floats for the solver loop (converted once per tableau)."""
        return self._float_coefficients


def _tableau(name: str, order: int, c: list, a: list[list], b: list, description: str) -> ButcherTableau:
    return ButcherTableau(
        name,
        order,
        tuple(_f(x) for x in c),
        tuple(tuple(_f(x) for x in row) for row in a),
        tuple(_f(x) for x in b),
        description,
    )


METHODS: Registry[ButcherTableau] = Registry("method")
for _t in (
    _tableau("euler", 1, [0], [[]], [1], "forward Euler"),
    _tableau("midpoint", 2, [0, "1/2"], [[], ["1/2"]], [0, 1], "explicit midpoint"),
    _tableau("heun2", 2, [0, 1], [[], [1]], ["1/2", "1/2"], "Heun's method (explicit trapezoid)"),
    _tableau(
        "rk4",
        4,
        [0, "1/2", "1/2", 1],
        [[], ["1/2"], [0, "1/2"], [0, 0, 1]],
        ["1/6", "1/3", "1/3", "1/6"],
        "classical Runge-Kutta 4 (what the reference mixed-precision library uses)",
    ),
    _tableau(
        "rk4-38",
        4,
        [0, "1/3", "2/3", 1],
        [[], ["1/3"], ["-1/3", 1], [1, -1, 1]],
        ["1/8", "3/8", "3/8", "1/8"],
        "Kutta's 3/8 rule (what torchdiffeq calls 'rk4')",
    ),
):
    METHODS.add(_t.name, _t)


def get_method(method: str | ButcherTableau) -> ButcherTableau:
    return method if isinstance(method, ButcherTableau) else METHODS.get(method)
