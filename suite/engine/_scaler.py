"""Adjoint scaling strategies for the engine's backward pass.

Both strategies keep their state in device tensors so that the backward loop never has to ask the
host what happened on a step. The dynamic one decides everything from *scaled* quantities:

    S_i = 2^(floor(log2(target / max|a_i|)))      with target = 2^(min(emax, 15) - e)

where e ≥ 1 is a headroom exponent: +1 (halve S) and retry when a VJP overflows, -1 (double S) after a
clean step whose largest scaled output stayed below max/8. The scale follows the adjoint's own
magnitude at every step, and the headroom learns how much the vector-Jacobian product amplifies it.
The reference implementation compared the *unscaled* adjoint with the target, so it doubled after
almost every clean step until it overflowed; deciding on the scaled outputs avoids that.
"""

from __future__ import annotations

import math

import torch

__all__ = ["FixedScale", "DynamicScale", "ScalerExhausted"]


class ScalerExhausted(FloatingPointError):
    """The adjoint stayed non-finite at one step after every allowed retry."""


class FixedScale:
    """No scaling: S = 1, every attempt is accepted."""

    dynamic = False

    def __init__(self, device: torch.device, accumulate: torch.dtype) -> None:
        self.one = torch.ones((), device=device, dtype=accumulate)

    def scale(self, adjoint_max: torch.Tensor | None) -> torch.Tensor:
        return self.one


class DynamicScale:
    """Per-step power-of-two adjoint scaling with retry on overflow (see module docstring)."""

    dynamic = True

    def __init__(
        self,
        device: torch.device,
        accumulate: torch.dtype,
        compute: torch.dtype,
        initial_headroom: int = 5,
        max_retries: int = 40,
    ) -> None:
        info = torch.finfo(compute)
        self.top_exponent = min(int(math.floor(math.log2(info.max))), 15)
        self.safe_max = info.max / 8.0
        self.max_retries = max_retries
        kw = {"device": device}
        self.headroom = torch.full((), float(initial_headroom), dtype=torch.float32, **kw)
        self.consecutive = torch.zeros((), dtype=torch.int64, **kw)
        self.exhausted = torch.zeros((), dtype=torch.bool, **kw)
        self.n_retries = torch.zeros((), dtype=torch.int64, **kw)
        self.accepted_scale = torch.ones((), dtype=accumulate, **kw)
        self.scale_min = torch.full((), math.inf, dtype=torch.float64, **kw)
        self.scale_max = torch.full((), -math.inf, dtype=torch.float64, **kw)
        self._current = torch.ones((), dtype=accumulate, **kw)
        self.accumulate = accumulate

    def scale(self, adjoint_max: torch.Tensor) -> torch.Tensor:
        """The scale for this attempt, from the adjoint's own magnitude (a device tensor, no sync)."""
        amax = adjoint_max.float()
        usable = torch.isfinite(amax) & (amax > 0)
        exponent = (self.top_exponent - self.headroom) - torch.log2(torch.where(usable, amax, 1.0))
        exponent = torch.where(usable, torch.floor(exponent), 0.0).clamp(-120.0, 120.0)
        self._current = torch.exp2(exponent).to(self.accumulate)
        return self._current

    def observe(self, scaled_max: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Given the largest scaled magnitude of the attempt, return whether it is accepted."""
        finite = torch.isfinite(scaled_max)
        ok = finite & active & ~self.exhausted
        retry = ~finite & active & ~self.exhausted
        grow = ok & (scaled_max < self.safe_max)
        shrunk = (self.headroom - 1).clamp(min=1)
        self.headroom = torch.where(retry, self.headroom + 1, torch.where(grow, shrunk, self.headroom))
        self.consecutive = torch.where(retry, self.consecutive + 1, torch.zeros_like(self.consecutive))
        self.exhausted = self.exhausted | (self.consecutive > self.max_retries)
        self.n_retries = self.n_retries + retry.long()
        s64 = self._current.double()
        self.scale_min = torch.where(ok, torch.minimum(self.scale_min, s64), self.scale_min)
        self.scale_max = torch.where(ok, torch.maximum(self.scale_max, s64), self.scale_max)
        self.accepted_scale = torch.where(ok, self._current, self.accepted_scale)
        return ok
