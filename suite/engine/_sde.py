"""Fixed-grid SDE stepping under the engine's precision policy, on given Brownian increments.

dX = f(t, X) dt + g(t, X) dW. Euler-Maruyama solves the Itô SDE; Heun (predictor-corrector trapezoid)
solves the Stratonovich SDE. Drift and diffusion are evaluated in the compute dtype, the state is
accumulated in the accumulation dtype, the trajectory is returned in the storage dtype.
Differentiation is discretize-then-optimize: autograd through the steps. The increments dW are an
argument, so every estimator of a comparison can share the same paths.

Noise types (shapes for a state of shape (batch, d) and increments of shape (N, batch, m)):
    diagonal: g(t, x) has shape (batch, d), m = d, the noise term is g ⊙ dW;
    additive: like diagonal but g does not depend on x (Heun still averages g(t_n) and g(t_n+1));
    general:  g(t, x) has shape (batch, d, m), the noise term is g @ dW.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from suite.deadline import check_deadline
from suite.engine._field import FieldCall
from suite.precision import Precision, get_precision, tf32_mode

__all__ = ["sdeint", "SDE_METHODS", "NOISE_TYPES", "SDEProblem"]

SDE_METHODS = {"euler-maruyama": "ito", "heun": "stratonovich"}
NOISE_TYPES = ("diagonal", "additive", "general")


@dataclass(frozen=True)
class SDEProblem:
    """An Itô SDE dX = f dt + g dW, and ∂g_i/∂x_i for its Stratonovich form (diagonal noise).

    The Stratonovich SDE with the same solution has drift f - ½ g ⊙ ∂g/∂x for diagonal noise (and f itself
    for additive noise); schemes that solve Stratonovich SDEs (Heun, midpoint, reversible Heun) must be
    given that drift. For general noise the correction is f_i - ½ Σ_jk G_kj ∂G_ij/∂x_k, which needs the
    full derivative of G: not implemented, so a Stratonovich drift of a general-noise problem is refused.
    """

    drift: Callable
    diffusion: Callable
    diffusion_dx: Callable | None = None
    noise: str = "diagonal"

    def __post_init__(self) -> None:
        if self.noise not in NOISE_TYPES:
            raise ValueError(f"noise {self.noise!r}; allowed: {', '.join(NOISE_TYPES)}")

    def stratonovich_drift(self, t, x):
        if self.noise == "additive":
            return self.drift(t, x)
        return self.drift(t, x) - 0.5 * self.diffusion(t, x) * self.diffusion_dx(t, x)

    def drift_for(self, sde_type: str) -> Callable:
        if sde_type not in ("ito", "stratonovich"):
            raise ValueError(f"sde_type {sde_type!r}; allowed: ito, stratonovich")
        if sde_type == "ito":
            return self.drift
        if self.noise == "general":
            raise ValueError(
                "the Itô-to-Stratonovich drift correction for general noise (f_i - ½ Σ_jk G_kj ∂G_ij/∂x_k) is not "
                "implemented; use an Itô scheme (euler-maruyama) or give the Stratonovich drift yourself")
        if self.noise == "diagonal" and self.diffusion_dx is None:
            raise ValueError("a Stratonovich scheme on a diagonal-noise problem needs diffusion_dx (∂g_i/∂x_i)")
        return self.stratonovich_drift


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
    policy: str = "cast",
) -> torch.Tensor:
    """Integrate on the grid t with the increments dw; return the trajectory of shape (len(t), *y0.shape).

    Arguments:
        drift, diffusion: f(t, x) and g(t, x) (functions or Modules); see the module docstring for shapes.
        y0: (batch, d) initial state.
        t: 1-D grid; dw: (len(t) - 1, batch, m) Brownian increments, dw[i] ~ N(0, (t[i+1] - t[i]) I).
        method: "euler-maruyama" (Itô) or "heun" (Stratonovich).
        noise: "diagonal", "additive" or "general".
        precision: the engine's policies (fp64, fp32, tf32, bf16, fp16).
        policy: "cast" (drift and diffusion on compute-dtype copies of their parameters, cast once per
            solve; a closure must compute in the dtype it is given) or "autocast" (under torch.autocast,
            fp32 parameters), as for `odeint`.
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
    # Parameters are cast once per solve, by differentiable copies (the steps are differentiated by autograd).
    calls = [FieldCall(fn, policy=policy, compute=prec.compute, accumulate=acc, params=None, args=(),
                       device=y0.device) for fn in (drift, diffusion)]
    bindings = [c.bind(differentiable=True) for c in calls]
    state_dtype = calls[0].state_dtype
    x = y0.to(acc)
    out = [x.to(prec.storage)]
    times = t.to(acc).to(state_dtype)

    def evaluate(k: int, time, state):
        if not calls[k].checked:
            return calls[k].first_call(bindings[k].call, time, state)
        return bindings[k].call(time, state)

    with torch.autocast(y0.device.type, enabled=False), tf32_mode(prec.tf32), bindings[0].context, \
            bindings[1].context:
        for i in range(t.shape[0] - 1):
            check_deadline()
            h = (t[i + 1] - t[i]).to(acc)
            dwi = dw[i].to(acc)
            xs = x.to(state_dtype)
            f0 = evaluate(0, times[i], xs).to(acc)
            g0 = evaluate(1, times[i], xs).to(acc)
            if method == "euler-maruyama":
                x = x + f0 * h + _noise(g0, dwi, noise)
            else:
                predictor = x + f0 * h + _noise(g0, dwi, noise)
                ps = predictor.to(state_dtype)
                f1 = evaluate(0, times[i + 1], ps).to(acc)
                # additive noise too: g at t_{n+1} (the trapezoid in time, as torchsde's Heun), not g(t_n) again
                g1 = evaluate(1, times[i + 1], ps).to(acc)
                x = x + 0.5 * (f0 + f1) * h + _noise(0.5 * (g0 + g1), dwi, noise)
            out.append(x.to(prec.storage))
    for b in bindings:
        b.write_back()
    return torch.stack(out)
