"""Fixed-grid SDE stepping under the engine's precision policy, on given Brownian increments.

dX = f(t, X) dt + g(t, X) dW. Euler-Maruyama solves the Itô SDE; Heun (predictor-corrector trapezoid)
solves the Stratonovich SDE. Drift and diffusion are evaluated in the compute dtype, the state is
accumulated in the accumulation dtype, the trajectory is returned in the storage dtype.
Differentiation is discretize-then-optimize: autograd through the steps. The increments dW are an
argument, so every estimator of a comparison can share the same paths.

Noise types (shapes for a state of shape (batch, d) and increments of shape (N, batch, m)):
    diagonal: g(t, x) has shape (batch, d), m = d, the noise term is g ⊙ dW;
    additive: like diagonal but g does not depend on x (evaluated once per step, never at the predictor);
    general:  g(t, x) has shape (batch, d, m), the noise term is g @ dW.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from suite.precision import Precision, get_precision, tf32_mode

__all__ = ["sdeint", "SDE_METHODS", "NOISE_TYPES", "SDEProblem"]

SDE_METHODS = {"euler-maruyama": "ito", "heun": "stratonovich"}
NOISE_TYPES = ("diagonal", "additive", "general")


@dataclass(frozen=True)
class SDEProblem:
    """An Itô SDE dX = f dt + g dW with diagonal noise, and ∂g_i/∂x_i for its Stratonovich form.

    The Stratonovich SDE with the same solution has drift f - ½ g ⊙ ∂g/∂x (diagonal noise); schemes that
    solve Stratonovich SDEs (Heun, midpoint, reversible Heun) must be given that drift.
    """

    drift: Callable
    diffusion: Callable
    diffusion_dx: Callable
    noise: str = "diagonal"

    def stratonovich_drift(self, t, x):
        return self.drift(t, x) - 0.5 * self.diffusion(t, x) * self.diffusion_dx(t, x)

    def drift_for(self, sde_type: str) -> Callable:
        if sde_type not in ("ito", "stratonovich"):
            raise ValueError(f"sde_type {sde_type!r}; allowed: ito, stratonovich")
        return self.drift if sde_type == "ito" else self.stratonovich_drift


def _low_precision_call(fn: Callable, precision: Precision) -> Callable:
    """fn evaluated with its inputs (and, for a Module, its parameters) in the compute dtype.

    Parameters are cast by differentiable copies (torch.func.functional_call), never in place, so the
    autograd graph of the steps stays valid and gradients reach the fp32 master parameters.
    """
    low = precision.compute
    if isinstance(fn, torch.nn.Module):
        def call(t, x):
            tensors = {k: (v.to(low) if v.is_floating_point() else v)
                       for k, v in {**dict(fn.named_parameters()), **dict(fn.named_buffers())}.items()}
            return torch.func.functional_call(fn, tensors, (t.to(low), x.to(low)))
    else:
        def call(t, x):
            return fn(t.to(low), x.to(low))
    return call


def _noise(g: torch.Tensor, dw: torch.Tensor, noise: str) -> torch.Tensor:
    if noise == "general":
        return (g @ dw.unsqueeze(-1)).squeeze(-1)
    return g * dw


def sdeint(
    drift: Callable,
    diffusion: Callable,
    y0: torch.Tensor,
    t: torch.Tensor,
    dw: torch.Tensor,
    *,
    method: str = "euler-maruyama",
    noise: str = "diagonal",
    precision: str | Precision = "fp32",
    accumulate: torch.dtype | None = None,
) -> torch.Tensor:
    """Integrate on the grid t with the increments dw; return the trajectory of shape (len(t), *y0.shape).

    Arguments:
        drift, diffusion: f(t, x) and g(t, x) (functions or Modules); see the module docstring for shapes.
        y0: (batch, d) initial state.
        t: 1-D grid; dw: (len(t) - 1, batch, m) Brownian increments, dw[i] ~ N(0, (t[i+1] - t[i]) I).
        method: "euler-maruyama" (Itô) or "heun" (Stratonovich).
        noise: "diagonal", "additive" or "general".
        precision: the engine's policies (fp64, fp32, tf32, bf16, fp16).
    """
    if method not in SDE_METHODS:
        raise ValueError(f"method {method!r}; allowed: {', '.join(SDE_METHODS)}")
    if noise not in NOISE_TYPES:
        raise ValueError(f"noise {noise!r}; allowed: {', '.join(NOISE_TYPES)}")
    if y0.dim() != 2:
        raise ValueError(f"y0: expected shape (batch, d), got {tuple(y0.shape)}")
    if t.dim() != 1 or t.shape[0] < 2:
        raise ValueError(f"t: expected a 1-D grid with at least 2 times, got shape {tuple(t.shape)}")
    if dw.dim() != 3 or dw.shape[0] != t.shape[0] - 1 or dw.shape[1] != y0.shape[0]:
        raise ValueError(f"dw: expected shape ({t.shape[0] - 1}, {y0.shape[0]}, m), got {tuple(dw.shape)}")
    if noise != "general" and dw.shape[2] != y0.shape[1]:
        raise ValueError(f"dw: {noise} noise needs m = d = {y0.shape[1]} increments per path, got {dw.shape[2]}")
    prec = get_precision(precision)
    acc = accumulate or prec.accumulate
    f = _low_precision_call(drift, prec)
    g = _low_precision_call(diffusion, prec)
    x = y0.to(acc)
    out = [x.to(prec.storage)]
    with torch.autocast(y0.device.type, enabled=False), tf32_mode(prec.tf32):
        for i in range(t.shape[0] - 1):
            h = (t[i + 1] - t[i]).to(acc)
            dwi = dw[i].to(acc)
            f0 = f(t[i], x).to(acc)
            g0 = g(t[i], x).to(acc)
            if method == "euler-maruyama":
                x = x + f0 * h + _noise(g0, dwi, noise)
            else:
                predictor = x + f0 * h + _noise(g0, dwi, noise)
                f1 = f(t[i + 1], predictor).to(acc)
                g1 = g0 if noise == "additive" else g(t[i + 1], predictor).to(acc)
                x = x + 0.5 * (f0 + f1) * h + _noise(0.5 * (g0 + g1), dwi, noise)
            out.append(x.to(prec.storage))
    return torch.stack(out)
