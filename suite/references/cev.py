"""The CEV model dX = σ X^β dW (β > 1), J(x0) = E[X_T] with Φ(x) = x: exact value and gradient.

R = X^(1-β) / (σ(β-1)) is a Bessel process of dimension δ = (1-2β)/(1-β) > 2, and X_T = (σ(β-1) R_T)^(-1/(β-1))
= c·R_T^(2-δ). For BES(δ) started at R_0, E[R_T^(2-δ)] = R_0^(2-δ) · P(ν, z) with ν = δ/2 - 1 = 1/(2(β-1)),
z = R_0²/(2T) and P the regularized lower incomplete gamma function (the law of 1/R_T² given by a
non-central χ²). Hence

    E[X_T] = x0 · P(ν, z),   z = x0^(2(1-β)) / (2 σ² (β-1)² T),
    dE[X_T]/dx0 = P(ν, z) + 2(1-β) · z^ν e^(-z) / Γ(ν).

X is a strict local martingale (E[X_T] < x0). For β = 1.5 (ν = 1, δ = 4): E[X_T] = x0(1 - e^(-z)) and
dJ/dx0 = 1 - (1 + z) e^(-z) with z = 2/(σ² x0 T); at σ = 0.5, x0 = 1, T = 1: 1 - 9e^(-8) ≈ 0.996981.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CEV"]


@dataclass(frozen=True)
class CEV:
    sigma: float = 0.5
    beta: float = 1.5
    x0: float = 1.0
    T: float = 1.0

    def __post_init__(self) -> None:
        if self.beta < 1.0:
            raise ValueError(f"the CEV closed form here needs beta >= 1 (got {self.beta}); for beta < 1 the "
                             "process hits 0 and is absorbed, another formula")
        if self.sigma <= 0 or self.x0 <= 0 or self.T <= 0:
            raise ValueError("CEV needs sigma, x0 and T positive")

    @property
    def nu(self) -> float:
        return 1.0 / (2.0 * (self.beta - 1.0))

    @property
    def z(self) -> float:
        return self.x0 ** (2.0 * (1.0 - self.beta)) / (2.0 * self.sigma**2 * (self.beta - 1.0) ** 2 * self.T)

    def expectation(self) -> float:
        if self.beta == 1.0:  # driftless geometric Brownian motion: a true martingale
            return self.x0
        from scipy.special import gammainc

        return self.x0 * float(gammainc(self.nu, self.z))

    def gradient(self) -> float:
        """dE[X_T]/dx0, exact."""
        if self.beta == 1.0:
            return 1.0
        from scipy.special import gammainc, gammaln

        nu, z = self.nu, self.z
        density_term = math.exp(nu * math.log(z) - z - gammaln(nu))
        return float(gammainc(nu, z)) + 2.0 * (1.0 - self.beta) * density_term
