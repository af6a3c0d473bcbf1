"""Exact value of the 100-D stochastic optimal control problems through the Cole-Hopf transform.

Problem: minimise E[∫_0^T λ|u|² ds + w g(z_T)] subject to dz = c u ds + σ dW, z(0) = z0, with
g(z) = ln(½(1 + |z - x_ref|²)). The HJB equation V_t + ½σ²ΔV - (c²/4λ)|∇V|² = 0 becomes the heat equation
for ψ = exp(-V/κ) with κ = 2λσ²/c², so

    V(0, z0) = -κ log E[exp(-w g(z0 + σ√T ξ)/κ)],  ξ ~ N(0, I_d).

g depends on |z - x_ref|² only: with a = z0 - x_ref and s = σ√T, |a + sξ|² = (|a| + s ξ₁)² + s² R² where
ξ₁ ~ N(0, 1) and R² ~ χ²_(d-1) are independent. The d-dimensional expectation is therefore a 2-D integral,
computed here in log space (the neuralsoc-code weight 1000 makes the integrand peak tens of standard
deviations out, where Monte Carlo is useless) by tensor-product quadrature on a window around the peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

__all__ = ["SOCProblem", "SOC_VARIANTS", "value_cole_hopf", "value_monte_carlo"]


@dataclass(frozen=True)
class SOCProblem:
    d: int = 100
    sigma: float = 2 * math.sqrt(2) / 5
    control_gain: float = 1.0  # c in dz = c u ds + σ dW
    running_weight: float = 0.5  # λ in L = λ|u|²
    terminal_weight: float = 1.0  # w in w·g
    x_ref: float = 3.0  # every coordinate of x_ref
    z0: float = 0.0  # every coordinate of z(0)
    T: float = 1.0

    @property
    def kappa(self) -> float:
        return 2 * self.running_weight * self.sigma**2 / self.control_gain**2

    def terminal(self, r2):
        """w·g as a function of r² = |z - x_ref|²."""
        return self.terminal_weight * np.log(0.5 * (1.0 + r2))


SOC_VARIANTS = {
    "slide": SOCProblem(),
    "neuralsoc-code": SOCProblem(control_gain=2.0, running_weight=1.0, terminal_weight=1000.0),
    "hje-2018": SOCProblem(sigma=math.sqrt(2.0), control_gain=2.0, running_weight=1.0, x_ref=0.0),
}


def _log_integrand(p: SOCProblem, xi1, r):
    """log[ φ(ξ₁) · χ_(d-1)(R) · exp(-w g/κ) ]: ξ₁ standard normal, R chi-distributed with d-1 degrees of freedom
    (R rather than R², whose density is singular at 0 for small d)."""
    a = abs(p.z0 - p.x_ref) * math.sqrt(p.d)
    s = p.sigma * math.sqrt(p.T)
    dist2 = (a + s * xi1) ** 2 + (s * r) ** 2
    return -0.5 * xi1**2 - 0.5 * math.log(2 * math.pi) + stats.chi.logpdf(r, p.d - 1) - p.terminal(dist2) / p.kappa


def _window(p: SOCProblem) -> tuple[float, float, float, float]:
    """(ξ₁ low, ξ₁ high, R low, R high): the box around the log-integrand's maximum outside which it has fallen
    by more than 60 (e^-60 of the peak). Edges are found by doubling along each axis from the peak, not from
    the curvature there: the integrand has polynomial shoulders (g is logarithmic), wider than its peak."""
    a = abs(p.z0 - p.x_ref) * math.sqrt(p.d)
    s = p.sigma * math.sqrt(p.T)

    def log_f(xi, r):
        return float(_log_integrand(p, xi, abs(r) + 1e-300))

    starts = [(0.0, math.sqrt(max(p.d - 2, 1))), (-a / s, 1.0), (-a / (2 * s), math.sqrt(max(p.d - 2, 1)))]
    best = min((optimize.minimize(lambda v: -log_f(*v), x0, method="Nelder-Mead",
                                  options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20_000}) for x0 in starts),
               key=lambda res: res.fun)
    xi_c, r_c, top = best.x[0], abs(best.x[1]), -best.fun

    def edge(axis: int, sign: float) -> float:
        step = 1e-3
        while True:
            point = [xi_c, r_c]
            point[axis] += sign * step
            if axis == 1 and point[1] <= 0.0:
                return 0.0
            if log_f(*point) < top - 60.0 or step > 1e6:
                return point[axis]
            step *= 1.5

    return edge(0, -1.0), edge(0, 1.0), edge(1, -1.0), edge(1, 1.0)


def value_cole_hopf(p: SOCProblem, points: int = 1501) -> float:
    """V(0, z0) by 2-D quadrature in log space around the integrand's peak; converged to far better than
    4 significant digits (tests compare resolutions and Monte Carlo)."""
    if p.d < 2:
        raise ValueError("the (ξ₁, R) reduction needs d >= 2")
    xi_lo, xi_hi, r_lo, r_hi = _window(p)
    xi = np.linspace(xi_lo, xi_hi, points)
    r = np.linspace(r_lo, r_hi, points)
    log_f = _log_integrand(p, xi[:, None], r[None, :])
    # Trapezoid rule: half weight on the box's edges (the chi density is not zero at R = 0 when d = 2).
    log_f[[0, -1], :] += math.log(0.5)
    log_f[:, [0, -1]] += math.log(0.5)
    log_weights = math.log(xi[1] - xi[0]) + math.log(r[1] - r[0])
    return -p.kappa * (special.logsumexp(log_f) + log_weights)


def value_monte_carlo(p: SOCProblem, n: int, seed: int = 0, chunk: int = 200_000) -> tuple[float, float]:
    """Brute-force V(0, z0) from n Gaussian samples in d dimensions: (estimate, standard error by the delta method)."""
    rng = np.random.default_rng(seed)
    a = np.full(p.d, p.z0 - p.x_ref)
    s = p.sigma * math.sqrt(p.T)
    values = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z = a + s * rng.standard_normal((m, p.d))
        values.append(-p.terminal((z * z).sum(1)) / p.kappa)
    logs = np.concatenate(values)
    shift = logs.max()
    weights = np.exp(logs - shift)
    mean = weights.mean()
    estimate = -p.kappa * (math.log(mean) + shift)
    stderr = p.kappa * weights.std() / math.sqrt(weights.size) / mean
    return estimate, stderr
