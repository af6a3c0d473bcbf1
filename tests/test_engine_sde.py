"""Engine SDE stepping: strong orders on geometric Brownian motion (float64), exact DTO derivatives, policy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from suite.engine import sdeint

MU, SIGMA, T, X0 = math.log(0.64), 1.2308, 1.0, 1.0
PATHS, FINE = 4000, 256


def _fine_increments(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(FINE, PATHS, 1, generator=gen, dtype=torch.float64) * math.sqrt(T / FINE)


def _coarsen(dw, n):
    return dw.reshape(n, FINE // n, *dw.shape[1:]).sum(1)


def _strong_errors(method, exact_exponent_shift):
    dw = _fine_increments()
    w_T = dw.sum(0)
    exact = X0 * torch.exp((MU - exact_exponent_shift) * T + SIGMA * w_T)
    errors, steps = [], []
    for n in (16, 32, 64, 128, 256):
        t = torch.linspace(0, T, n + 1, dtype=torch.float64)
        x = sdeint(lambda t, x: MU * x, lambda t, x: SIGMA * x, torch.full((PATHS, 1), X0, dtype=torch.float64),
                   t, _coarsen(dw, n), method=method, precision="fp64")
        errors.append(float((x[-1] - exact).abs().mean()))
        steps.append(T / n)
    return np.polyfit(np.log(steps), np.log(errors), 1)[0]


def test_euler_maruyama_strong_order_one_half_on_ito_gbm():
    slope = _strong_errors("euler-maruyama", SIGMA**2 / 2)  # Itô GBM: exp((μ - σ²/2)T + σW)
    assert abs(slope - 0.5) < 0.2, slope


def test_heun_converges_to_the_stratonovich_solution_with_order_one():
    slope = _strong_errors("heun", 0.0)  # Stratonovich GBM: exp(μT + σW)
    assert abs(slope - 1.0) < 0.25, slope


def test_dto_gradient_is_the_exact_derivative_of_the_discrete_map():
    n = 20
    t = torch.linspace(0, T, n + 1, dtype=torch.float64)
    dw = torch.randn(n, 50, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.2
    x0 = torch.full((50, 1), X0, dtype=torch.float64, requires_grad=True)
    x = sdeint(lambda t, x: MU * x, lambda t, x: SIGMA * x, x0, t, dw, precision="fp64")
    (grad,) = torch.autograd.grad(x[-1].sum(), x0)
    h = T / n
    expected = torch.prod(1 + MU * h + SIGMA * dw, dim=0)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_evaluates_low_and_accumulates_high(precision):
    seen = []

    class Drift(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mu = torch.nn.Parameter(torch.tensor(MU))

        def forward(self, t, x):
            seen.append((x.dtype, self.mu.dtype))
            return self.mu * x

    drift = Drift()
    x0 = torch.ones(8, 1, requires_grad=True)
    dw = torch.randn(10, 8, 1) * 0.1
    x = sdeint(drift, lambda t, x: SIGMA * x, x0, torch.linspace(0, 1, 11), dw, precision=precision)
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert x.dtype == low and set(seen) == {(low, low)}
    x[-1].float().sum().backward()
    assert drift.mu.dtype == torch.float32 and drift.mu.grad.dtype == torch.float32 and x0.grad is not None


def test_general_and_additive_noise_and_bad_shapes():
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    dw = torch.randn(4, 4, 3, dtype=torch.float64)
    mix = torch.randn(2, 3, dtype=torch.float64)
    x = sdeint(lambda t, x: 0 * x, lambda t, x: mix.expand(4, 2, 3), x0, t, dw, noise="general", precision="fp64")
    torch.testing.assert_close(x[-1], dw.sum(0) @ mix.T)
    dw2 = torch.randn(4, 4, 2, dtype=torch.float64)
    x = sdeint(lambda t, x: 0 * x, lambda t, x: torch.full_like(x, 2.0), x0, t, dw2, noise="additive",
               method="heun", precision="fp64")
    torch.testing.assert_close(x[-1], 2 * dw2.sum(0))
    with pytest.raises(ValueError, match=r"dw: expected shape \(4, 4, m\)"):
        sdeint(lambda t, x: x, lambda t, x: x, x0, t, dw[:3])
    with pytest.raises(ValueError, match="method 'milstein'; allowed: euler-maruyama, heun"):
        sdeint(lambda t, x: x, lambda t, x: x, x0, t, dw2, method="milstein")


def test_heun_with_time_dependent_additive_noise_is_the_trapezoid():
    """dX = -X dt + (1 + t) dW: Heun must average g(t_n) and g(t_n+1) (torchsde's Heun does), not reuse g(t_n).

    Measured here, both converge with strong order 1 (the noise term's local error is O(h^1.5) either way);
    the trapezoid has the smaller error constant. So the test checks the order, that the trapezoid beats the
    stale corrector, and that the paths equal torchsde's Heun exactly."""
    n_paths, fine = 2000, 512
    gen = torch.Generator().manual_seed(4)
    dw_fine = torch.randn(fine, n_paths, 1, generator=gen, dtype=torch.float64) * math.sqrt(1.0 / fine)
    x0 = torch.ones(n_paths, 1, dtype=torch.float64)

    def solve(n):
        t = torch.linspace(0, 1, n + 1, dtype=torch.float64)
        dw = dw_fine.reshape(n, fine // n, n_paths, 1).sum(1)
        return sdeint(lambda t, x: -x, lambda t, x: (1 + t) * torch.ones_like(x), x0, t, dw, method="heun",
                      noise="additive", precision="fp64")[-1]

    exact = solve(fine)
    errors = {n: float((solve(n) - exact).abs().mean()) for n in (8, 16, 32, 64)}
    slope = np.polyfit(np.log([1 / n for n in errors]), np.log(list(errors.values())), 1)[0]
    assert abs(slope - 1.0) < 0.2, errors
    # the old corrector (g(t_n) twice) has a larger error
    n = 16
    t = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    dw = dw_fine.reshape(n, fine // n, n_paths, 1).sum(1)
    stale = x0.clone()
    for i in range(n):
        h = float(t[i + 1] - t[i])
        pred = stale - stale * h + (1 + t[i]) * dw[i]
        stale = stale + 0.5 * (-stale - pred) * h + (1 + t[i]) * dw[i]
    assert errors[16] < 0.95 * float((stale - exact).abs().mean())
    torchsde = pytest.importorskip("torchsde")

    class Additive(torch.nn.Module):
        noise_type, sde_type = "diagonal", "stratonovich"

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return (1 + t) * torch.ones_like(y)

    from suite.backends.torchsde import _grid_brownian

    theirs = torchsde.sdeint(Additive(), x0, t, bm=_grid_brownian(t, dw), method="heun", dt=1 / n)[-1]
    torch.testing.assert_close(solve(n), theirs, rtol=1e-12, atol=1e-12)


def test_heun_on_a_general_noise_problem_is_refused():
    from suite.engine import SDEProblem

    problem = SDEProblem(lambda t, x: -x, lambda t, x: torch.ones(*x.shape, 3), noise="general")
    assert problem.drift_for("ito") is problem.drift
    with pytest.raises(ValueError, match="general noise .* not implemented; use an Itô scheme"):
        problem.drift_for("stratonovich")


def test_parameters_are_cast_once_per_solve_not_per_evaluation():
    class Drift(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mu = torch.nn.Parameter(torch.tensor(-0.3))

        def forward(self, t, x):
            return self.mu * x

    drift = Drift()
    x = sdeint(drift, lambda t, x: 0.2 * x, torch.ones(8, 1), torch.linspace(0, 1, 41), torch.randn(40, 8, 1) * 0.1,
               method="heun", precision="bf16")
    casts, seen, stack = 0, set(), [x.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__.startswith("ToCopyBackward") and any(
                getattr(n, "variable", None) is drift.mu for n, _ in node.next_functions):
            casts += 1
        stack.extend(n for n, _ in node.next_functions)
    assert casts == 1  # 80 evaluations, one copy


def test_a_closure_over_an_fp32_tensor_is_refused_at_low_precision():
    from suite.engine import FieldDtypeError

    rate = torch.tensor([[-0.3]])
    with pytest.raises(FieldDtypeError, match="returned float32"):  # silently fp32 before
        sdeint(lambda t, x: x * rate[0], lambda t, x: 0.2 * x, torch.ones(8, 1),
               torch.linspace(0, 1, 5), torch.randn(4, 8, 1) * 0.1, precision="bf16")
    with pytest.raises(FieldDtypeError, match="dtype error"):  # a bare dtype mismatch before
        sdeint(lambda t, x: x @ rate, lambda t, x: 0.2 * x, torch.ones(8, 1),
               torch.linspace(0, 1, 5), torch.randn(4, 8, 1) * 0.1, precision="bf16")
