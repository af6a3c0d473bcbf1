"""One explicit Runge-Kutta increment under the mixed-precision policy.

Φ(f, y_L, t, h) = Σ_j b_j k_j with k_j = f(t + c_j h, Q_L(y_L + h Σ_l a_jl k_l)).
The stage states and the weighted sum are formed in the accumulation dtype; f sees only the compute
dtype. The base state y_L is the *stored* (quantized) state, so the backward pass can rebuild exactly
the increment the forward took.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from suite.engine._tableau import ButcherTableau

__all__ = ["increment", "combine", "StateSpec"]

Func = Callable[[torch.Tensor, object], object]


class StateSpec:
    """The structure of the ODE state: one tensor, or a tuple of tensors (flattened internally)."""

    def __init__(self, y0: torch.Tensor | Sequence[torch.Tensor]) -> None:
        self.is_tuple = not isinstance(y0, torch.Tensor)
        flat = list(y0) if self.is_tuple else [y0]
        if not flat:
            raise ValueError("y0: expected a tensor or a non-empty tuple of tensors, got an empty tuple")
        for k, y in enumerate(flat):
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"y0[{k}]: expected a torch.Tensor, got {type(y).__name__}")
            if not y.is_floating_point():
                raise TypeError(f"y0[{k}]: expected a floating-point tensor, got {y.dtype}")
        self.shapes = [y.shape for y in flat]
        self.flat = flat

    def pack(self, flat: Sequence[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return tuple(flat) if self.is_tuple else flat[0]

    def unpack(self, value: object, what: str) -> list[torch.Tensor]:
        """Flatten func's output and check it against the state's structure (torchsde-style contract)."""
        if self.is_tuple:
            if not isinstance(value, (tuple, list)) or len(value) != len(self.shapes):
                raise ValueError(
                    f"{what}: the state is a tuple of {len(self.shapes)} tensors, so func must return a tuple "
                    f"of {len(self.shapes)} tensors; got {type(value).__name__}"
                    + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
                )
            flat = list(value)
        else:
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{what}: func must return a tensor like y0, got {type(value).__name__}")
            flat = [value]
        for k, (v, shape) in enumerate(zip(flat, self.shapes)):
            if not isinstance(v, torch.Tensor) or v.shape != shape:
                got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"{what}: component {k} must have the state's shape {tuple(shape)}, got {got}")
        return flat


def combine(base, h, coefs, ks):
    """base + h·Σ coef·k (or Σ coef·k without base), skipping zero coefficients."""
    total = None
    for coef, k in zip(coefs, ks):
        if coef != 0.0:
            term = k * coef
            total = term if total is None else total + term
    if base is None:
        return total
    return base if total is None else base + h * total


def increment(
    func: Func,
    spec: StateSpec,
    tableau: ButcherTableau,
    t: torch.Tensor,
    h: torch.Tensor,
    y_base: Sequence[torch.Tensor],
    compute: torch.dtype,
    accumulate: torch.dtype,
) -> tuple[list[torch.Tensor], int]:
    """Return (Φ as a list in the accumulation dtype, number of func evaluations).

    The whole increment runs in the compute dtype, as in the published algorithm (Φ(f, Q_L(y_H), t, h,
    Q_L(θ))): stage states y_L + h Σ a k and the weighted sum Σ b k are low-precision operations.
    Only the caller's update y_H + h·Q_H(Φ) is high precision.

    Arguments:
        t, h: 0-d tensors (time and step); stage times are formed in t's dtype, then cast to `compute`.
        y_base: the stored state, one tensor per component.
    """
    c, a, b = tableau.floats()
    y_low = [y.to(compute) for y in y_base]
    h_low = h.to(compute)
    ks: list[list[torch.Tensor]] = []
    for j in range(tableau.n_stages):
        stage = [combine(y, h_low, a[j], [k[comp] for k in ks]) for comp, y in enumerate(y_low)]
        t_stage = (t + c[j] * h if c[j] != 0.0 else t).to(compute)
        out = spec.unpack(func(t_stage, spec.pack(stage)), f"func output at stage {j}")
        ks.append([k.to(compute) for k in out])
    phi = [combine(None, None, b, [k[comp] for k in ks]).to(accumulate) for comp in range(len(y_base))]
    return phi, tableau.n_stages
