"""Gradients of a scalar loss under a cell's scaling, the way a training step would take them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from suite.backends import AbstractSolver

__all__ = ["scaled_gradients"]


def scaled_gradients(
    loss_fn: Callable[[], torch.Tensor],
    leaves: Sequence[torch.Tensor],
    solver: AbstractSolver,
    device: torch.device,
    max_attempts: int = 40,
) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Return (d loss / d leaves, info).

    With scaling="grad", torch's GradScaler is used exactly as in an AMP training loop (scale, backward,
    unscale_, step, update) on an optimizer with lr=0; an overflow makes GradScaler halve its scale and
    the gradient is taken again, as the next training iteration would. Other scalings call backward once.
    """
    def collect() -> list[torch.Tensor]:
        # A leaf the loss does not reach has gradient zero (autograd leaves .grad as None).
        return [leaf.grad.detach().clone() if leaf.grad is not None else torch.zeros_like(leaf) for leaf in leaves]

    scaler = solver.grad_scaler(device)
    for leaf in leaves:
        leaf.grad = None
    if not scaler.is_enabled():
        loss = loss_fn()
        loss.backward()
        return collect(), {"loss": float(loss.detach())}
    optimizer = torch.optim.SGD(list(leaves), lr=0.0)
    for attempt in range(1, max_attempts + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        scale_used = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads = collect()
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        scaler.step(optimizer)
        scaler.update()
        if finite:
            return grads, {"loss": float(loss.detach()), "grad_scale": scale_used, "grad_attempts": attempt}
    return grads, {"loss": float(loss.detach()), "grad_scale": scaler.get_scale(), "grad_attempts": max_attempts}
