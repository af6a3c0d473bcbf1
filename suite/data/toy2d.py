"""FFJORD-style 2-D toy distributions, rewritten to be exact and reproducible.

Fixes of the original generators: each draws from the torch.Generator it is given (never the global
RNG), returns exactly n points for every n, and an unknown name is an error (FFJORD fell back to
8gaussians silently).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from suite.registry import Registry

__all__ = ["TOY2D", "sample_toy2d"]

Sampler = Callable[[int, torch.Generator], torch.Tensor]
TOY2D: Registry[Sampler] = Registry("2-D dataset")


def _rand(n: int, gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(n, *shape, generator=gen, dtype=torch.float64)


def _randn(n: int, gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(n, *shape, generator=gen, dtype=torch.float64)


def _split(n: int, parts: int) -> list[int]:
    """n as `parts` near-equal integers summing exactly to n."""
    return [n // parts + (1 if k < n % parts else 0) for k in range(parts)]


@TOY2D.register("checkerboard")
def checkerboard(n: int, gen: torch.Generator) -> torch.Tensor:
    x1 = _rand(n, gen) * 4 - 2
    x2 = _rand(n, gen) - torch.randint(0, 2, (n,), generator=gen).double() * 2
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1) * 2


@TOY2D.register("8gaussians")
def eight_gaussians(n: int, gen: torch.Generator) -> torch.Tensor:
    s = 1.0 / math.sqrt(2)
    centers = 4.0 * torch.tensor(
        [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)], dtype=torch.float64
    )
    which = torch.randint(0, 8, (n,), generator=gen)
    return (_randn(n, gen, 2) * 0.5 + centers[which]) / 1.414


@TOY2D.register("2spirals")
def two_spirals(n: int, gen: torch.Generator) -> torch.Tensor:
    half = _split(n, 2)
    m = torch.sqrt(_rand(half[0], gen)) * 540 * (2 * math.pi) / 360
    d1 = torch.stack([-torch.cos(m) * m, torch.sin(m) * m], 1) + _rand(half[0], gen, 2) * 0.5
    m2 = torch.sqrt(_rand(half[1], gen)) * 540 * (2 * math.pi) / 360
    d2 = -(torch.stack([-torch.cos(m2) * m2, torch.sin(m2) * m2], 1) + _rand(half[1], gen, 2) * 0.5)
    x = torch.cat([d1, d2]) / 3
    return x + _randn(n, gen, 2) * 0.1


@TOY2D.register("moons")
def moons(n: int, gen: torch.Generator) -> torch.Tensor:
    outer, inner = _split(n, 2)
    a = _rand(outer, gen) * math.pi
    b = _rand(inner, gen) * math.pi
    x = torch.cat([torch.stack([torch.cos(a), torch.sin(a)], 1),
                   torch.stack([1 - torch.cos(b), 1 - torch.sin(b) - 0.5], 1)])
    x = x + _randn(n, gen, 2) * 0.1
    return x * 2 + torch.tensor([-1.0, -0.2], dtype=torch.float64)


@TOY2D.register("rings")
def rings(n: int, gen: torch.Generator) -> torch.Tensor:
    parts = []
    for count, radius in zip(_split(n, 4), (4.0, 3.0, 2.0, 1.0)):
        angle = _rand(count, gen) * 2 * math.pi
        parts.append(torch.stack([torch.cos(angle), torch.sin(angle)], 1) * radius)
    x = torch.cat(parts)
    return x + _randn(n, gen, 2) * 0.08


@TOY2D.register("circles")
def circles(n: int, gen: torch.Generator) -> torch.Tensor:
    outer, inner = _split(n, 2)
    a = _rand(outer, gen) * 2 * math.pi
    b = _rand(inner, gen) * 2 * math.pi
    x = torch.cat([torch.stack([torch.cos(a), torch.sin(a)], 1), 0.5 * torch.stack([torch.cos(b), torch.sin(b)], 1)])
    return (x + _randn(n, gen, 2) * 0.08) * 3


@TOY2D.register("pinwheel")
def pinwheel(n: int, gen: torch.Generator) -> torch.Tensor:
    radial_std, tangential_std, num_classes, rate = 0.3, 0.1, 5, 0.25
    rads = torch.linspace(0, 2 * math.pi, num_classes + 1, dtype=torch.float64)[:-1]
    features = _randn(n, gen, 2) * torch.tensor([radial_std, tangential_std], dtype=torch.float64)
    features[:, 0] += 1.0
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    angles = rads[labels] + rate * torch.exp(features[:, 0])
    rot = torch.stack([torch.cos(angles), -torch.sin(angles), torch.sin(angles), torch.cos(angles)], 1)
    x = torch.einsum("ti,tij->tj", features, rot.reshape(n, 2, 2))
    return 2 * x


@TOY2D.register("swissroll")
def swissroll(n: int, gen: torch.Generator) -> torch.Tensor:
    t = 1.5 * math.pi * (1 + 2 * _rand(n, gen))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) + _randn(n, gen, 2) * 1.0
    return x / 5


def sample_toy2d(name: str, n: int, gen: torch.Generator, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Exactly n points of the named distribution, drawn from `gen` (a CPU generator)."""
    if n < 1:
        raise ValueError(f"n must be a positive number of points, got {n}")
    x = TOY2D.get(name)(n, gen)
    if x.shape != (n, 2):  # internal invariant of the generators above
        raise AssertionError(f"{name} produced {tuple(x.shape)} instead of ({n}, 2): this is a bug")
    return x.to(dtype=dtype, device=device)
