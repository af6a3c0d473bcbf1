"""The OT-Flow potential Φ(x, t) with its gradient and x-Laplacian in closed form (Onken et al., 2021).

Φ(s) = wᵀ N(s) + ½ sᵀ AᵀA s + cᵀ s + c0, s = [x; t] ∈ R^(d+1), A ∈ R^(r×(d+1)), and the ResNet
N: u0 = σ(K0 s + b0), u_i = u_(i-1) + h σ(K_i u_(i-1) + b_i) (i = 1..nTh-1, h = 1/(nTh-1)),
σ(z) = log(2 cosh z), σ' = tanh, σ'' = 1 - tanh².

Gradient: back-propagate G_i = ∂(wᵀu_M)/∂u_i by hand. Laplacian over x (exact, no autograd Hessian):
the Hessian of a composition is Σ_i J_(i-1)ᵀ (Σ_k G_ik ∇²F_ik) J_(i-1) with J_i = ∂u_i/∂x, and
∇²F_ik = h σ''(z_ik) K_ikᵀ K_ik, so tr = Σ_k G_0k σ''(z_0k) |K0_k,x|² + h Σ_(i≥1) Σ_k G_ik σ''(z_ik) |K_ik J_(i-1)|².
The (batch, m, d) Jacobian J (stored transposed) is the tensor that sets this model's memory.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["OTFlowPotential", "log2cosh"]


def log2cosh(z: torch.Tensor) -> torch.Tensor:
    """log(2 cosh z) without overflow: |z| + log1p(exp(-2|z|))."""
    a = z.abs()
    return a + torch.log1p(torch.exp(-2 * a))


class OTFlowPotential(nn.Module):
    def __init__(self, d: int, width: int = 1024, n_layers: int = 2, rank: int = 10) -> None:
        super().__init__()
        if n_layers < 2:
            raise ValueError(f"n_layers (nTh) must be >= 2 (an opening layer plus residual layers), got {n_layers}")
        self.d, self.width, self.n_layers = d, width, n_layers
        self.h = 1.0 / (n_layers - 1)
        self.opening = nn.Linear(d + 1, width)
        self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(n_layers - 1)])
        self.w = nn.Parameter(torch.ones(width))
        self.A = nn.Parameter(torch.empty(rank, d + 1))
        self.c = nn.Linear(d + 1, 1)
        nn.init.xavier_normal_(self.A)
        for layer in self.layers:  # OT-Flow initialises the residual layers small
            nn.init.uniform_(layer.weight, -1.0 / math.sqrt(width), 1.0 / math.sqrt(width))
        nn.init.zeros_(self.c.weight)
        nn.init.zeros_(self.c.bias)

    def _resnet(self, s: torch.Tensor):
        """Forward pass keeping the pre-activations z_i (for σ', σ'')."""
        zs = [self.opening(s)]
        u = log2cosh(zs[0])
        for layer in self.layers:
            zs.append(layer(u))
            u = u + self.h * log2cosh(zs[-1])
        return zs, u

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """Φ(s) for s = [x, t] of shape (batch, d + 1); returns (batch,)."""
        _, u = self._resnet(s)
        quad = 0.5 * ((s @ self.A.T) ** 2).sum(1)
        return u @ self.w + quad + self.c(s).squeeze(1)

    def grad_and_laplacian(self, s: torch.Tensor, laplacian: bool = True):
        """(∇_s Φ of shape (batch, d+1), Δ_x Φ of shape (batch,) or None), both in closed form."""
        zs, _ = self._resnet(s)
        tanhs = [torch.tanh(z) for z in zs]
        # Backward: G_M = w; G_(i-1) = G_i + h K_iᵀ (σ'(z_i) ⊙ G_i).
        g = self.w.expand(s.shape[0], -1)
        backs = [g]
        for layer, th in zip(reversed(self.layers), reversed(tanhs[1:])):
            g = g + self.h * (th * g) @ layer.weight
            backs.append(g)
        backs.reverse()  # backs[i] = G_i, i = 0..M
        gram = self.A.T @ self.A
        grad = (tanhs[0] * backs[0]) @ self.opening.weight + s @ gram + self.c.weight
        if not laplacian:
            return grad, None
        k0x = self.opening.weight[:, : self.d]  # (m, d)
        trace = ((1 - tanhs[0] ** 2) * backs[0]) @ (k0x * k0x).sum(1)
        # J_iᵀ is kept as (batch, d, m) so that K_i J_(i-1) is one (batch·d, m) × (m, m) GEMM: a (m, m) @
        # (batch, m, d) matmul would broadcast K_i over the batch, and its weight gradient would
        # materialise (batch, m, m), gigabytes at the paper's shape.
        jac_t = tanhs[0].unsqueeze(1) * k0x.T.unsqueeze(0)  # J_0ᵀ = (diag(σ'(z0)) K0 E)ᵀ: (batch, d, m)
        for i, layer in enumerate(self.layers, start=1):
            kj_t = jac_t @ layer.weight.T  # (K_i J_(i-1))ᵀ: (batch, d, m)
            trace = trace + self.h * (((1 - tanhs[i] ** 2) * backs[i]) * (kj_t * kj_t).sum(1)).sum(1)
            if i < len(self.layers):
                jac_t = jac_t + self.h * tanhs[i].unsqueeze(1) * kj_t
        trace = trace + (self.A[:, : self.d] ** 2).sum()
        return grad, trace
