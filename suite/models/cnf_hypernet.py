"""The time-dependent hypernetwork vector field of the 2-D CNF experiment, with exact divergence.

t → tanh(Lin(1, hidden)) → tanh(Lin(hidden, hidden)) → Lin(hidden, 3·width·d + width), split into W, U, G, B;
f(z) = mean_j u_j tanh(w_j·z + b_j) with u = U·sigmoid(G); div f = mean_j (1 - tanh²(w_j·z + b_j)) (u_j·w_j).
The state is (z, Δlogp) with d(Δlogp)/dt = -div f (instantaneous change of variables).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HyperNetField"]


class HyperNetField(nn.Module):
    def __init__(self, dim: int = 2, width: int = 128, hidden: int = 32) -> None:
        super().__init__()
        self.dim, self.width = dim, width
        self.block = width * dim
        self.net = nn.Sequential(
            nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, 3 * self.block + width),
        )

    def weights(self, t: torch.Tensor):
        """(W, U, B): W, U of shape (width, dim), B of shape (width,), for the scalar time t."""
        p = self.net(t.reshape(1, 1)).reshape(-1)
        w = p[: self.block].reshape(self.width, self.dim)
        u = p[self.block: 2 * self.block].reshape(self.width, self.dim)
        g = p[2 * self.block: 3 * self.block].reshape(self.width, self.dim)
        b = p[3 * self.block:]
        return w, u * torch.sigmoid(g), b

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        z, _ = state
        w, u, b = self.weights(t.to(z.dtype))
        h = torch.tanh(z @ w.T + b)  # (batch, width)
        dz = h @ u / self.width
        div = (1 - h * h) @ (u * w).sum(1) / self.width
        return dz, -div.unsqueeze(1)
