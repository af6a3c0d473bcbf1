"""Exact log-densities and differential entropies of the 2-D toy distributions, as `suite.data.toy2d` draws them.

Why: the expected NLL of any model of p is ≥ H(p), with equality only for p itself, so H(p) is the floor
that a cnf-2d NLL is measured against (`kl = val_nll - entropy`). Each generator's density, in float64:

| name | density | H by |
|---|---|---|
| checkerboard | uniform on 8 squares of side 2 (area 32) | closed form, log 32 |
| 8gaussians | mixture of 8 isotropic Gaussians | Monte Carlo of -log p, p exact |
| rings, circles | equal mixtures of blurred circles, exp(-(r-R)²/2σ²)·I0e(rR/σ²)/(2πσ²) | Monte Carlo, p exact |
| moons, swissroll | a curve c(s), s uniform, blurred by N(0, σ²I) | Monte Carlo, p by Gauss-Legendre |
| 2spirals | a curve plus a uniform box, blurred: normal-CDF differences | Monte Carlo, p by Gauss-Legendre |
| pinwheel | change of variables from the Gaussian features (every preimage) | Monte Carlo, p exact (root finding) |

The Monte Carlo draws its points with the project's own generators, so H is the entropy of exactly the
distribution the task trains on. Its error: the standard error of the mean of -log p, plus a quadrature error
(the change of the mean when the number of nodes is doubled). `entropy_knn` (Kozachenko-Leonenko nearest
neighbours) is an independent estimate that never evaluates p: the tests check both agree.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special

from suite.data.toy2d import sample_toy2d

__all__ = ["EntropyEstimate", "log_density", "entropy", "entropy_knn", "ENTROPY_METHODS"]

_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class EntropyEstimate:
    """H(p) in nats, its Monte Carlo standard error, a quadrature error bound, and how it was computed."""

    value: float
    stderr: float
    quadrature_error: float
    method: str
    samples: int

    @property
    def error(self) -> float:
        """A 2-sigma error bar: 2·stderr + quadrature error."""
        return 2 * self.stderr + self.quadrature_error


def _log_gauss_2d(d2: np.ndarray, sigma: float) -> np.ndarray:
    return -0.5 * d2 / sigma**2 - _LOG_2PI - 2 * math.log(sigma)


def _logmeanexp(a: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    return special.logsumexp(a, axis=axis, b=weights)


def _checkerboard(x: np.ndarray, nodes: int) -> np.ndarray:
    u = x / 2
    inside_x = (u[:, 0] >= -2) & (u[:, 0] < 2)
    v = u[:, 1] - np.floor(u[:, 0]) % 2
    inside_y = ((v >= -2) & (v < -1)) | ((v >= 0) & (v < 1))
    return np.where(inside_x & inside_y, -math.log(32.0), -np.inf)


def _eight_gaussians(x: np.ndarray, nodes: int) -> np.ndarray:
    s = 1 / math.sqrt(2)
    centers = 4.0 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)]) / 1.414
    sigma = 0.5 / 1.414
    d2 = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
    return _logmeanexp(_log_gauss_2d(d2, sigma), np.full(8, 1 / 8), axis=1)


def _blurred_circles(radii: tuple[float, ...], sigma: float) -> Callable[[np.ndarray, int], np.ndarray]:
    def log_p(x: np.ndarray, nodes: int) -> np.ndarray:
        r = np.linalg.norm(x, axis=1)[:, None]
        big_r = np.asarray(radii)[None]
        # exp(-(r²+R²)/2σ²) I0(rR/σ²) / (2πσ²), written with the scaled Bessel I0e(z) = e^-z I0(z)
        log_ring = (-(r - big_r) ** 2 / (2 * sigma**2) + np.log(special.i0e(r * big_r / sigma**2))
                    - _LOG_2PI - 2 * math.log(sigma))
        return _logmeanexp(log_ring, np.full(len(radii), 1 / len(radii)), axis=1)
    return log_p


def _gauss_legendre(a: float, b: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    s, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (b - a) * s + 0.5 * (b + a), 0.5 * (b - a) * w


def _composite_nodes(a: float, b: float, nodes: int, order: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre: `nodes` points in panels of `order` (robust for long, wiggly curves)."""
    panels = max(1, nodes // order)
    edges = np.linspace(a, b, panels + 1)
    s, w = np.polynomial.legendre.leggauss(order)
    half = 0.5 * np.diff(edges)[:, None]
    mid = 0.5 * (edges[1:] + edges[:-1])[:, None]
    return (mid + half * s[None]).ravel(), (half * w[None]).ravel()


def _chunked(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, budget: int = 4_000_000,
             width: int = 1) -> np.ndarray:
    rows = max(1, budget // max(width, 1))
    return np.concatenate([fn(x[i: i + rows]) for i in range(0, len(x), rows)]) if len(x) else np.empty(0)


def _blurred_curve(curve: Callable[[np.ndarray], np.ndarray], a: float, b: float, sigma: float
                   ) -> Callable[[np.ndarray, int], np.ndarray]:
    """log ∫ φ_σ(x - c(s)) ds/(b - a): a uniform parameter on [a, b], a point on the curve, Gaussian blur.

    Summed in linear space (a sampled point lies within a few σ of the curve, far from underflow)."""
    def log_p(x: np.ndarray, nodes: int) -> np.ndarray:
        s, w = _composite_nodes(a, b, nodes)
        c = curve(s)  # (nodes, 2)
        weights = w / (b - a) / (2 * math.pi * sigma**2)

        def part(xc):
            d2 = ((xc[:, None, :] - c[None]) ** 2).sum(-1)
            with np.errstate(divide="ignore"):
                return np.log(np.exp(-0.5 * d2 / sigma**2) @ weights)
        return _chunked(part, x, width=len(s))
    return log_p


def _moons(x: np.ndarray, nodes: int) -> np.ndarray:
    shift = np.array([-1.0, -0.2])

    def outer(a):
        return 2 * np.stack([np.cos(a), np.sin(a)], 1) + shift

    def inner(b):
        return 2 * np.stack([1 - np.cos(b), 1 - np.sin(b) - 0.5], 1) + shift

    lo = _blurred_curve(outer, 0.0, math.pi, 0.2)(x, nodes)
    li = _blurred_curve(inner, 0.0, math.pi, 0.2)(x, nodes)
    return np.logaddexp(lo, li) - math.log(2)


def _swissroll(x: np.ndarray, nodes: int) -> np.ndarray:
    def curve(t):
        return np.stack([t * np.cos(t), t * np.sin(t)], 1) / 5
    return _blurred_curve(curve, 1.5 * math.pi, 4.5 * math.pi, 0.2)(x, nodes)


def _box_blur(x: np.ndarray, lo: np.ndarray, width: float, sigma: float) -> np.ndarray:
    """Density of U[lo, lo + width] + N(0, σ²), per coordinate: a difference of normal CDFs over the width.
    (Where both CDFs are near 1 the difference loses digits, but only where it is below ~1e-12 and adds
    nothing to the mixture.)"""
    return (special.ndtr((x - lo) / sigma) - special.ndtr((x - lo - width) / sigma)) / width


def _two_spirals(x: np.ndarray, nodes: int) -> np.ndarray:
    # Half the points: m = 3π·sqrt(U) (density 2m/(3π)² on [0, 3π]), point (c(m) + B)/3 with B uniform on
    # [0, 0.5]², then N(0, 0.1²) per coordinate; the other half is its mirror image -(c + B)/3.
    top = 3 * math.pi
    m, w = _composite_nodes(0.0, top, nodes)
    weights = w * 2 * m / top**2
    c = np.stack([-np.cos(m) * m, np.sin(m) * m], 1) / 3  # box corner, after the /3

    def half(xc):
        dens = _box_blur(xc[:, None, 0], c[None, :, 0], 0.5 / 3, 0.1) * _box_blur(xc[:, None, 1], c[None, :, 1],
                                                                                   0.5 / 3, 0.1)
        return dens @ weights

    def both(xc):
        with np.errstate(divide="ignore"):
            return np.log(0.5 * (half(xc) + half(-xc)))
    return _chunked(both, x, width=2 * len(m))


def _pinwheel(x: np.ndarray, nodes: int) -> np.ndarray:
    # y = x/2 has polar (r, α - θ) where the features f = r(cos α, sin α) ~ N((1, 0), diag(0.3², 0.1²)) and
    # θ = 2πk/5 + ¼·exp(f0). For each class, every α solving α - ¼·exp(r cos α) ≡ β + 2πk/5 (mod 2π) is a
    # preimage, and p_y = Σ p_f(f) / |1 + ¼ r sin α exp(r cos α)|; p_x = p_y / 4.
    radial, tangential, classes, rate = 0.3, 0.1, 5, 0.25
    grid = np.linspace(0.0, 2 * math.pi, max(nodes, 64) + 1)

    def part(xc):
        y = xc / 2
        r = np.linalg.norm(y, axis=1)
        beta = np.arctan2(y[:, 1], y[:, 0])
        total = np.zeros(len(y))
        for k in range(classes):
            target = beta + 2 * math.pi * k / classes
            g = grid[None] - rate * np.exp(r[:, None] * np.cos(grid[None])) - target[:, None]
            level = np.floor(g / (2 * math.pi))
            rows, cols = np.nonzero(np.diff(level, axis=1) != 0)
            lv = 2 * math.pi * np.maximum(level[rows, cols], level[rows, cols + 1])
            lo, hi = grid[cols], grid[cols + 1]
            rr, tt = r[rows], target[rows]
            sign_lo = np.sign(lo - rate * np.exp(rr * np.cos(lo)) - tt - lv)
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                s_mid = np.sign(mid - rate * np.exp(rr * np.cos(mid)) - tt - lv)
                left = s_mid == sign_lo
                lo, hi = np.where(left, mid, lo), np.where(left, hi, mid)
            alpha = 0.5 * (lo + hi)
            f0, f1 = rr * np.cos(alpha), rr * np.sin(alpha)
            log_pf = (-0.5 * ((f0 - 1) / radial) ** 2 - 0.5 * (f1 / tangential) ** 2
                      - _LOG_2PI - math.log(radial * tangential))
            jac = np.abs(1 + rate * rr * np.sin(alpha) * np.exp(f0))
            np.add.at(total, rows, np.exp(log_pf) / jac)
        with np.errstate(divide="ignore"):
            return np.log(total / classes) - math.log(4.0)
    return _chunked(part, x, width=classes * len(grid))


_LOG_DENSITIES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "checkerboard": _checkerboard,
    "8gaussians": _eight_gaussians,
    "rings": _blurred_circles((4.0, 3.0, 2.0, 1.0), 0.08),
    "circles": _blurred_circles((3.0, 1.5), 0.24),
    "moons": _moons,
    "swissroll": _swissroll,
    "2spirals": _two_spirals,
    "pinwheel": _pinwheel,
}
# How each H is obtained (the table above, one line each; the report and records name it).
ENTROPY_METHODS = {
    "checkerboard": "closed form: log 32 (uniform on area 32)",
    "8gaussians": "Monte Carlo of -log p, p an exact Gaussian mixture",
    "rings": "Monte Carlo of -log p, p exact (blurred circles, Bessel I0)",
    "circles": "Monte Carlo of -log p, p exact (blurred circles, Bessel I0)",
    "moons": "Monte Carlo of -log p, p by composite Gauss-Legendre over the arc",
    "swissroll": "Monte Carlo of -log p, p by composite Gauss-Legendre over the curve",
    "2spirals": "Monte Carlo of -log p, p by composite Gauss-Legendre over the spiral (box ⊗ Gaussian exact)",
    "pinwheel": "Monte Carlo of -log p, p exact by change of variables (preimages bracketed and bisected)",
}
_DEFAULT_NODES = {"moons": 128, "swissroll": 512, "2spirals": 384, "pinwheel": 256}


def log_density(name: str, x: np.ndarray, nodes: int | None = None) -> np.ndarray:
    """log p(x) in float64 for points x of shape (n, 2); -inf outside the support."""
    if name not in _LOG_DENSITIES:
        raise ValueError(f"unknown 2-D dataset {name!r}; allowed: {', '.join(sorted(_LOG_DENSITIES))}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {x.shape}")
    return _LOG_DENSITIES[name](x, nodes or _DEFAULT_NODES.get(name, 0))


def _draw(name: str, n: int, seed: int) -> np.ndarray:
    return sample_toy2d(name, n, torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()


@functools.lru_cache(maxsize=32)
def entropy(name: str, samples: int = 100_000, seed: int = 20261201) -> EntropyEstimate:
    """H(p) = -E[log p(X)] for the named generator (closed form for checkerboard), with its error."""
    if name == "checkerboard":
        return EntropyEstimate(math.log(32.0), 0.0, 0.0, ENTROPY_METHODS[name], 0)
    x = _draw(name, samples, seed)
    log_p = log_density(name, x)
    if not np.all(np.isfinite(log_p)):
        raise ArithmeticError(f"{name}: log p is not finite at {int((~np.isfinite(log_p)).sum())} sampled points")
    value = float(-log_p.mean())
    stderr = float(log_p.std(ddof=1) / math.sqrt(samples))
    quadrature = 0.0
    if name in _DEFAULT_NODES:  # doubling the nodes on a subset bounds the quadrature error of the mean
        subset = x[: min(samples, 5_000)]
        coarse = log_density(name, subset)
        fine = log_density(name, subset, nodes=2 * _DEFAULT_NODES[name])
        quadrature = float(abs((fine - coarse).mean()) + np.abs(fine - coarse).max() * 1e-3)
    return EntropyEstimate(value, stderr, quadrature, ENTROPY_METHODS[name], samples)


def entropy_knn(name: str, samples: int = 200_000, seed: int = 7, k: int = 4) -> float:
    """Kozachenko-Leonenko k-nearest-neighbour estimate of H: ψ(N) - ψ(k) + log π + (2/N) Σ log ε_k.

    Independent of `log_density` (it never evaluates p); biased by O(k/N)^(1/2) near sharp edges.
    """
    from scipy.spatial import cKDTree

    x = _draw(name, samples, seed)
    distances, _ = cKDTree(x).query(x, k=k + 1)
    eps = distances[:, k]
    return float(special.digamma(samples) - special.digamma(k) + math.log(math.pi) + 2 * np.log(eps).mean())
