"""The parabolic neural-ODE CNN of the STL-10 experiment (seed slide "STL-10"; FACTS.md).

Stem Conv3×3 → InstanceNorm(affine) → ReLU; ODE(C) → Conv1×1 (2C) → IN → ReLU → AvgPool2; ODE(2C) →
Conv1×1 (4C) → IN → ReLU → AvgPool2; ODE(4C) → global average pool → Linear(4C, 10).

Each ODE block integrates y' = f(t, y) = -Kᵀ IN(ReLU(K y + b)) on [0, 1], with Kᵀ the transposed convolution
sharing K's weights (so -KᵀσK is a negative semi-definite, "parabolic" operator when σ is monotone) and IN a
parameter-free instance norm. The weights (K, b) are piecewise constant over `intervals` equal time
intervals [k/n, (k+1)/n) (the last one closed): the usual floor rule, so at a boundary the field takes the
later interval's weights, and with one classical-RK4 step per interval a step's last stage (at its end
point) already sees the next step's weights. Every backend sees the same stage times, hence the same
field. The interval is picked on the device (no host synchronization per evaluation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ParabolicBlock", "ParabolicCNN", "parameter_count"]


class ParabolicBlock(nn.Module):
    """The vector field of one ODE block: f(t, y) = -Kᵀ IN(ReLU(K y + b)), K 3×3, piecewise constant in t."""

    def __init__(self, channels: int, intervals: int = 4) -> None:
        super().__init__()
        self.intervals = intervals
        scale = (2.0 / (9 * channels)) ** 0.5
        self.weight = nn.Parameter(torch.randn(intervals, channels, channels, 3, 3) * scale)
        self.bias = nn.Parameter(torch.zeros(intervals, channels))

    def interval(self, t: torch.Tensor) -> torch.Tensor:
        """[k/n, (k+1)/n) → k (t = 1 → n - 1), on the device: a 1-element index tensor."""
        k = torch.floor(t.reshape(1).float() * self.intervals)
        return k.clamp_(0, self.intervals - 1).long()

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = self.interval(t)
        weight = self.weight.index_select(0, k)[0]
        bias = self.bias.index_select(0, k)[0]
        z = F.relu(F.conv2d(y, weight, bias, padding=1))
        z = F.instance_norm(z)
        return -F.conv_transpose2d(z, weight, padding=1)


class ParabolicCNN(nn.Module):
    """The classifier; `solve(block, y)` integrates one ODE block (the cell's backend decides how)."""

    def __init__(self, channels: int = 128, classes: int = 10, intervals: int = 4) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.InstanceNorm2d(c, affine=True), nn.ReLU())
        self.block1 = ParabolicBlock(c, intervals)
        self.down1 = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.InstanceNorm2d(2 * c, affine=True), nn.ReLU(),
                                   nn.AvgPool2d(2))
        self.block2 = ParabolicBlock(2 * c, intervals)
        self.down2 = nn.Sequential(nn.Conv2d(2 * c, 4 * c, 1), nn.InstanceNorm2d(4 * c, affine=True), nn.ReLU(),
                                   nn.AvgPool2d(2))
        self.block3 = ParabolicBlock(4 * c, intervals)
        self.head = nn.Linear(4 * c, classes)

    def forward(self, x: torch.Tensor, solve: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        y = solve(self.block1, self.stem(x))
        y = solve(self.block2, self.down1(y))
        y = solve(self.block3, self.down2(y))
        return self.head(y.mean(dim=(2, 3)))


def parameter_count(channels: int, classes: int = 10, intervals: int = 4) -> int:
    """The formula the model must match: ODE blocks n·(9c² + c) at c, 2c, 4c; stem; two 1×1 convs; three
    affine instance norms; the linear head (≈ 12.6M at C = 128)."""
    c = channels
    blocks = sum(intervals * (9 * k * k + k) for k in (c, 2 * c, 4 * c))
    stem = 27 * c + c + 2 * c
    downs = (c * 2 * c + 2 * c + 2 * 2 * c) + (2 * c * 4 * c + 4 * c + 2 * 4 * c)
    return blocks + stem + downs + 4 * c * classes + classes
