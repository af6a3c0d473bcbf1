"""Backends `otd-naive` and `otd-corrected`: optimize-then-discretize gradients of an Itô SDE.

Forward: Euler-Maruyama on the Itô SDE with the given increments (the path is kept). Backward: the
continuous adjoint of a *Stratonovich* SDE, da = -a ∂f̂/∂x dt - a ∂g/∂x ∘ dW, solved backwards along the
same path with the trapezoid (Heun) rule, which converges to the Stratonovich solution:

    a_i = a + ½ [vjp(F_i, X_(i+1), a) + vjp(F_i, X_i, a + vjp(F_i, X_(i+1), a))],  F_i(x) = f̂(x) h + g(x) ⊙ dW_i.

`otd-naive` uses the Itô drift as f̂ (the mistake the seed slide warns about: for geometric Brownian motion
it converges to e^{(μ + σ²/2)T} instead of e^{μT}); `otd-corrected` uses the Itô→Stratonovich drift
f̂ = f - ½ g ∂g/∂x and converges to the true gradient. Written by hand on purpose: torchsde's adjoint
applies the correction itself, so it cannot show the naive method. Gradients reach the initial state
only (what the sde-adjoint-bias task differentiates).
"""

from __future__ import annotations

import torch

from suite.backends._base import BACKENDS, AbstractBackend, AbstractSolver, Capabilities
from suite.deadline import check_deadline


def _vjp(fn, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(x), x, a)
    return grad


class _StratonovichAdjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem, drift_hat, t, dw, x0):
        xs = [x0.detach()]
        x = xs[0]
        for i in range(t.shape[0] - 1):
            check_deadline()
            h = t[i + 1] - t[i]
            x = x + problem.drift(t[i], x) * h + problem.diffusion(t[i], x) * dw[i]
            xs.append(x)
        traj = torch.stack(xs)
        ctx.problem, ctx.drift_hat = problem, drift_hat
        ctx.save_for_backward(t, dw, traj)
        return traj

    @staticmethod
    def backward(ctx, grad_traj):
        t, dw, traj = ctx.saved_tensors
        problem, drift_hat = ctx.problem, ctx.drift_hat
        a = grad_traj[-1]
        for i in reversed(range(t.shape[0] - 1)):
            check_deadline()
            h = t[i + 1] - t[i]

            def step(x, s, i=i, h=h):
                return drift_hat(s, x) * h + problem.diffusion(s, x) * dw[i]

            k_end = _vjp(lambda x, i=i: step(x, t[i + 1]), traj[i + 1], a)
            k_start = _vjp(lambda x, i=i: step(x, t[i]), traj[i], a + k_end)
            a = a + 0.5 * (k_end + k_start) + grad_traj[i]
        return None, None, None, None, a


class OTDSolver(AbstractSolver):
    corrected = False
    naive_adjoint = True
    sde_type = "ito"  # the forward pass; the adjoint is solved as a Stratonovich SDE

    def estimator_label(self) -> str:
        return "otd-corrected" if self.corrected else "otd-naive"

    def sdeint(self, problem, y0, t, dw):
        if problem.noise != "diagonal":
            raise ValueError(f"{type(self).__name__}: diagonal noise only, got {problem.noise!r}")
        dtype = self.precision.compute
        drift_hat = problem.stratonovich_drift if self.corrected else problem.drift
        return _StratonovichAdjoint.apply(problem, drift_hat, t.to(dtype), dw.to(dtype), y0.to(dtype))


class CorrectedOTDSolver(OTDSolver):
    corrected = True
    naive_adjoint = False


_CAPS = dict(
    methods=frozenset(), precisions=frozenset({"fp64", "fp32"}), scalings=frozenset({"none"}),
    sde_methods=frozenset({"euler-maruyama"}), tuple_states=False,
)


@BACKENDS.register_instance("otd-naive")
class NaiveOTDBackend(AbstractBackend):
    name = "otd-naive"
    solver_class = OTDSolver
    summary = "continuous adjoint of the Itô SDE treated as Stratonovich, no drift correction (biased)"
    caps = Capabilities(gradient="optimize-then-discretize (uncorrected Stratonovich adjoint)", **_CAPS)


@BACKENDS.register_instance("otd-corrected")
class CorrectedOTDBackend(AbstractBackend):
    name = "otd-corrected"
    solver_class = CorrectedOTDSolver
    summary = "continuous adjoint with the Itô→Stratonovich drift correction f - ½ g ∂g/∂x"
    caps = Capabilities(gradient="optimize-then-discretize (Stratonovich adjoint, corrected drift)", **_CAPS)
