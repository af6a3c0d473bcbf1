"""Geometric Brownian motion dX = μX dt + σX dW (Itô), J(x0) = E[X_T] with Φ(x) = x.

X_T = x0 exp((μ - σ²/2)T + σW_T), so J = x0 e^{μT} and the exact gradient is dJ/dx0 = e^{μT}
(the pathwise derivative X_T/x0 has that mean). An optimize-then-discretize adjoint that treats the
Itô drift as if it were Stratonovich integrates da = -a μ dt - a σ ∘ dW backwards, whose solution along a
path is exp(μT + σW_T): it converges to E = e^{(μ + σ²/2)T}, off by the factor e^{σ²T/2}.
With μ = ln 0.64, σ = 1.2308, T = 1: 0.640 (exact) against 1.365 (naive), the seed slide's numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["GBM"]


@dataclass(frozen=True)
class GBM:
    mu: float = math.log(0.64)
    sigma: float = 1.2308
    T: float = 1.0
    x0: float = 1.0

    def expectation(self) -> float:
        return self.x0 * math.exp(self.mu * self.T)

    def gradient(self) -> float:
        """dJ/dx0, exact."""
        return math.exp(self.mu * self.T)

    def naive_adjoint_limit(self) -> float:
        """What the uncorrected (Itô drift as Stratonovich) continuous adjoint converges to as dt → 0."""
        return math.exp((self.mu + 0.5 * self.sigma**2) * self.T)

    def pathwise_derivative(self, w_T):
        """dX_T/dx0 along paths with Brownian endpoints w_T (array or tensor)."""
        import numpy as np

        return np.exp((self.mu - 0.5 * self.sigma**2) * self.T + self.sigma * np.asarray(w_T))
