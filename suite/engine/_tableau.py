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
        if self.order < 1:
            raise ValueError(f"tableau {self.name}: order must be at least 1, got {self.order}")
        for tree, weight, density in _order_conditions(self.a, self.b, self.order):
            if weight != Fraction(1, density):
                raise ValueError(
                    f"tableau {self.name}: claims order {self.order} but the order-{_tree_order(tree)} condition "
                    f"for the rooted tree {_tree_text(tree)} fails: Σ b·Φ = {weight}, needs 1/{density}"
                )

    @property
    def n_stages(self) -> int:
        return len(self.b)

    @functools.cached_property
    def _float_coefficients(self) -> tuple[list[float], list[list[float]], list[float]]:
        return [float(x) for x in self.c], [[float(x) for x in row] for row in self.a], [float(x) for x in self.b]

    def floats(self) -> tuple[list[float], list[list[float]], list[float]]:
        """(c, a, b) as Python floats for the solver loop (converted once per tableau)."""
        return self._float_coefficients


# ---------------------------------------------------------------- order conditions (Butcher's rooted trees)
# A rooted tree is the sorted tuple of its subtrees; the single node is (). A method has order p iff
# b·Φ(τ) = 1/γ(τ) for every tree τ with at most p nodes, where Φ(()) = 1 (a vector of ones),
# Φ([τ1..τm]) = Π_k A·Φ(τk) (componentwise) and γ([τ1..τm]) = |τ| Π_k γ(τk).
Tree = tuple


def _tree_order(tree: Tree) -> int:
    return 1 + sum(_tree_order(child) for child in tree)


def _trees(order: int) -> list[Tree]:
    """All rooted trees with exactly `order` nodes (canonical: children sorted)."""
    if order == 1:
        return [()]
    found: set[Tree] = set()

    def forests(n: int, max_child: Tree | None) -> list[list[Tree]]:
        if n == 0:
            return [[]]
        out = []
        for size in range(1, n + 1):
            for child in _trees(size):
                if max_child is not None and child > max_child:
                    continue
                for rest in forests(n - size, child):
                    out.append([child, *rest])
        return out

    for forest in forests(order - 1, None):
        found.add(tuple(sorted(forest)))
    return sorted(found)


def _density(tree: Tree) -> int:
    result = _tree_order(tree)
    for child in tree:
        result *= _density(child)
    return result


def _tree_text(tree: Tree) -> str:
    return "•" if not tree else "[" + ",".join(_tree_text(c) for c in tree) + "]"


def _order_conditions(a, b, order: int):
    """(tree, b·Φ(tree), γ(tree)) for every rooted tree up to `order` nodes, in exact arithmetic."""
    s = len(b)

    def phi(tree: Tree) -> list[Fraction]:
        values = [Fraction(1)] * s
        for child in tree:
            inner = phi(child)
            values = [values[i] * sum((a[i][l] * inner[l] for l in range(len(a[i]))), Fraction(0))
                      for i in range(s)]
        return values

    for n in range(1, order + 1):
        for tree in _trees(n):
            yield tree, sum((bj * pj for bj, pj in zip(b, phi(tree))), Fraction(0)), _density(tree)


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
