"""The mixed-precision engine: order, exact discrete gradients, agreement with torchdiffeq, scaling, safety."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import MLPField, TupleField
from helpers import unrolled_rk

from suite.engine import METHODS, ButcherTableau, ScalerExhausted, SolveStats, get_method, odeint
from suite.tasks.stiff_rk4 import StiffParams, closed_form, vector_field

ALL_METHODS = METHODS.names()


# ------------------------------------------------------------------ tableaux
def test_tableaux_check_themselves():
    from fractions import Fraction as F

    with pytest.raises(ValueError, match="weights b must sum to 1"):
        ButcherTableau("bad", 1, (F(0),), ((),), (F(1, 2),))
    with pytest.raises(ValueError, match="row sum"):
        ButcherTableau("bad", 2, (F(0), F(1, 2)), ((), (F(1),)), (F(0), F(1)))
    with pytest.raises(ValueError, match="claims order 4"):
        ButcherTableau("bad", 4, (F(0), F(1)), ((), (F(1),)), (F(1, 2), F(1, 2)))
    # classical RK4 with a32 split over a31 and a32: every quadrature condition (Σb cᵏ) still holds, the
    # order-3 tree condition Σ b a c = 1/6 does not
    with pytest.raises(ValueError, match=r"order-3 condition for the rooted tree \[\[•\]\] fails"):
        ButcherTableau("bad", 4, (F(0), F(1, 2), F(1, 2), F(1)),
                       ((), (F(1, 2),), (F(1, 4), F(1, 4)), (F(0), F(0), F(1))),
                       (F(1, 6), F(1, 3), F(1, 3), F(1, 6)))
    for name in METHODS.names():  # the shipped tableaux satisfy all their order conditions
        tableau = get_method(name)
        ButcherTableau(tableau.name, tableau.order, tableau.c, tableau.a, tableau.b)
    with pytest.raises(ValueError, match="unknown method 'rk5'; valid: euler, heun2, midpoint, rk4, rk4-38"):
        get_method("rk5")


# ------------------------------------------------------------------ convergence order (float64)
@pytest.mark.parametrize("method", ALL_METHODS)
def test_convergence_order_float64(method):
    """y' = y cos t, y(0) = 1 → y(1) = exp(sin 1); slope of log error vs log h ≈ the tableau's order."""
    exact = math.exp(math.sin(1.0))
    ks = [4, 5, 6, 7, 8]  # asymptotic regime, errors well above float64 roundoff
    errors, steps = [], []
    for k in ks:
        n = 2**k
        t = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
        y = odeint(lambda t, y: y * torch.cos(t), torch.ones(1, dtype=torch.float64), t,
                   method=method, precision="fp64")
        errors.append(abs(y[-1].item() - exact))
        steps.append(1.0 / n)
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - get_method(method).order) < 0.3, (method, slope, errors)


# ------------------------------------------------------------------ gradients (float64)
@pytest.mark.parametrize(
    ("precision", "dtype", "rtol"), [("fp64", torch.float64, 1e-10), ("fp32", torch.float32, 1e-4)]
)
@pytest.mark.parametrize("method", ["euler", "rk4", "rk4-38"])
def test_gradients_equal_unrolled_autograd(method, precision, dtype, rtol):
    field = MLPField(dtype=dtype)
    y0 = torch.randn(4, 3, dtype=dtype, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 9, dtype=dtype)
    weights = torch.randn(9, 4, 3, dtype=dtype)  # a loss on the whole trajectory

    def grads(traj):
        loss = (weights * traj).sum() + (traj[-1] ** 2).sum()
        return torch.autograd.grad(loss, [y0, *field.parameters()])

    ours = grads(odeint(field, y0, t, method=method, precision=precision))
    ref = grads(unrolled_rk(field, y0, t, method))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * 1e-2)


def test_fp64_tuple_state_gradients_equal_unrolled_autograd():
    field = TupleField()
    z0 = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    l0 = torch.zeros(5, 1, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 7, dtype=torch.float64)

    def grads(traj):
        z, logp = traj
        loss = (z[-1] ** 2).sum() + logp[-1].sum() + 0.3 * logp[3].sum()
        return torch.autograd.grad(loss, [z0, l0, *field.parameters()])

    ours = grads(odeint(field, (z0, l0), t, method="rk4", precision="fp64"))
    ref = grads(unrolled_rk(field, (z0, l0), t, "rk4"))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradcheck_finite_differences_y0_params_and_t():
    """Finite differences (torch.autograd.gradcheck) in float64, including the time grid, decreasing t."""
    theta = torch.tensor([0.7, -0.3], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([0.5, 1.5], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 0.8, 0.45, 0.0], dtype=torch.float64, requires_grad=True)

    def solve(y0, theta, t):
        def f(s, y):
            return -theta[0] * y * s + theta[1] * torch.sin(y)

        return odeint(f, y0, t, method="rk4", precision="fp64", params=[theta])

    assert torch.autograd.gradcheck(solve, (y0, theta, t))


def test_explicit_params_and_module_give_the_same_gradient():
    field = MLPField()
    y0 = torch.randn(3, 3, dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    g1 = torch.autograd.grad(odeint(field, y0, t, precision="fp64")[-1].sum(), list(field.parameters()))
    g2 = torch.autograd.grad(
        odeint(lambda s, y: field(s, y), y0, t, precision="fp64", params=list(field.parameters()))[-1].sum(),
        list(field.parameters()),
    )
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ engine vs torchdiffeq, same tableau
@pytest.mark.parametrize("method", ["rk4", "rk4-38", "midpoint", "euler"])
def test_fp32_engine_equals_torchdiffeq_direct(method):
    pytest.importorskip("torchdiffeq")
    from suite.backends import get_backend

    field = MLPField(dtype=torch.float32)
    y0 = torch.randn(6, 3, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 11)
    results = []
    for backend in ("engine", "torchdiffeq"):
        solver = get_backend(backend).solver(method, "fp32", "none")
        traj = solver.odeint(field, y0, t)
        grads = torch.autograd.grad((traj[-1] ** 2).sum(), [y0, *field.parameters()])
        results.append((traj.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=2e-6, atol=2e-6)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6)


def test_fp32_engine_equals_torchdiffeq_direct_tuple_state():
    pytest.importorskip("torchdiffeq")
    from suite.backends import get_backend

    field = TupleField(dtype=torch.float32)
    z0 = torch.randn(5, 2, requires_grad=True)
    l0 = torch.zeros(5, 1, requires_grad=True)
    t = torch.linspace(1.0, 0.0, 9)
    results = []
    for backend in ("engine", "torchdiffeq"):
        z, logp = get_backend(backend).solver("rk4", "fp32", "none").odeint(field, (z0, l0), t)
        loss = (z[-1] ** 2).sum() + logp[-1].sum()
        results.append((z.detach(), logp.detach(), torch.autograd.grad(loss, [z0, l0, *field.parameters()])))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=2e-6, atol=2e-6)
    for a, b in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6)


# ------------------------------------------------------------------ precision policy
class _Recording(torch.nn.Module):
    """Wraps a field and records the dtypes it sees (t, y, its own weight)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, t, y):
        self.seen.append((t.dtype, y.dtype, self.inner.l1.weight.dtype))
        return self.inner(t, y)


def test_low_precision_policy_dtypes():
    """f sees the compute dtype, the caller's parameters stay fp32, gradients come back in fp32."""
    field = _Recording(MLPField(dtype=torch.float32))
    y0 = torch.randn(4, 3, requires_grad=True)
    traj = odeint(field, y0, torch.linspace(0, 1, 3), precision="bf16")
    assert traj.dtype == torch.float32  # the accumulation dtype: dL/dy(T) enters unquantized
    assert set(field.seen) == {(torch.bfloat16, torch.bfloat16, torch.bfloat16)}
    assert odeint(field, y0, torch.linspace(0, 1, 3), precision="bf16", output="storage").dtype == torch.bfloat16
    traj[-1].sum().backward()
    weight = field.inner.l1.weight
    assert weight.dtype == torch.float32 and weight.grad.dtype == torch.float32
    assert y0.grad.dtype == torch.float32


def test_outer_autocast_does_not_change_the_engine():
    field = MLPField(dtype=torch.float32)
    y0 = torch.randn(4, 3)
    t = torch.linspace(0, 1, 5)
    plain = odeint(field, y0, t, precision="fp32")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = odeint(field, y0, t, precision="fp32")
    assert inside.dtype == torch.float32
    torch.testing.assert_close(plain, inside, rtol=0, atol=0)


def test_bad_arguments_name_what_is_allowed():
    y0 = torch.ones(2)
    t = torch.linspace(0, 1, 3)
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid: bf16, fp16, fp32, fp64, tf32"):
        odeint(lambda t, y: y, y0, t, precision="fp8")
    with pytest.raises(ValueError, match="scaling='grad' is not supported by the engine; valid: none, dynamic"):
        odeint(lambda t, y: y, y0, t, scaling="grad")
    with pytest.raises(ValueError, match="at least 2 times"):
        odeint(lambda t, y: y, y0, torch.zeros(1))
    with pytest.raises(ValueError, match=r"component 0 must have the state's shape \(2,\), got \(3,\)"):
        odeint(lambda t, y: torch.ones(3), y0, t)
    with pytest.raises(ValueError, match="must return a tuple of 2 tensors"):
        odeint(lambda t, y: y[0], (y0, y0), t)
    with pytest.raises(TypeError, match="floating-point"):
        odeint(lambda t, y: y, torch.ones(2, dtype=torch.int64), t)


# ------------------------------------------------------------------ dynamic scaling on the stiff problem
def _stiff_gradients(precision: str, scaling: str):
    params = StiffParams()
    theta = torch.tensor(params.theta, requires_grad=True)
    y0 = torch.tensor([params.y0], dtype=torch.float64).to(torch.float16).float().requires_grad_(True)
    stats = SolveStats()
    traj = odeint(vector_field(theta), y0, torch.linspace(0, params.T, 400), method="rk4",
                  precision=precision, scaling=scaling, params=[theta], stats=stats)
    y_T = traj[-1].double()
    (0.5 * y_T**2).sum().backward()
    return y0.grad.double().item(), theta.grad.double(), stats


def test_fp16_dynamic_gradient_within_2e_2_of_float64_reference():
    exact = closed_form(StiffParams())
    g_y0, g_theta, stats = _stiff_gradients("fp16", "dynamic")
    assert abs(g_y0 - exact["grad_y0"]) / exact["grad_y0"] < 2e-2
    for k in range(3):
        ref = exact[f"grad_theta{k + 1}"]
        assert abs(g_theta[k].item() - ref) / abs(ref) < 2e-2
    assert stats.scale_min is not None and stats.scale_min <= stats.scale_final <= stats.scale_max


def test_fp16_without_scaling_fails_and_dynamic_does_not():
    exact = closed_form(StiffParams())
    g_none, _, _ = _stiff_gradients("fp16", "none")
    g_dyn, _, _ = _stiff_gradients("fp16", "dynamic")
    assert abs(g_none - exact["grad_y0"]) / exact["grad_y0"] >= 1.0
    assert abs(g_dyn - exact["grad_y0"]) / exact["grad_y0"] < 2e-2


def test_dynamic_scaling_synchronizes_once_per_round_not_per_step():
    _, _, stats = _stiff_gradients("bf16", "dynamic")  # bf16: no overflow, so a single round
    assert stats.n_retries == 0
    assert stats.n_host_syncs_backward == 1
    assert stats.n_backward_attempts == 399
    _, _, stats = _stiff_gradients("fp16", "dynamic")
    # each overflow: one round ends early (its later attempts wasted), then rounds of 1, 2, 4, ... steps
    assert 1 <= stats.n_retries
    assert stats.n_host_syncs_backward <= 1 + stats.n_retries * (2 + math.ceil(math.log2(399)))
    assert 399 + stats.n_retries <= stats.n_backward_attempts < 2 * 399


def test_scale_follows_the_scaled_adjoint_not_the_unscaled_one():
    """A smooth problem at fp16 needs no retries after the first few steps (no grow-until-overflow cycle)."""
    field = MLPField(dtype=torch.float32)
    y0 = torch.randn(16, 3, requires_grad=True)
    stats = SolveStats()
    traj = odeint(field, y0, torch.linspace(0, 1, 101), precision="fp16", scaling="dynamic", stats=stats)
    (traj[-1].float() ** 2).sum().backward()
    assert stats.n_retries <= 5, stats


# ------------------------------------------------------------------ failures leave nothing changed
def test_caller_tensors_untouched_after_an_error_in_forward():
    field = MLPField(dtype=torch.float32)
    before = [p.detach().clone() for p in field.parameters()]
    calls = {"n": 0}

    class Failing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = field

        def forward(self, t, y):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("injected failure")
            return self.inner(t, y)

    with pytest.raises(RuntimeError, match="injected failure"):
        odeint(Failing(), torch.randn(2, 3), torch.linspace(0, 1, 4), precision="fp16")
    for p, b in zip(field.parameters(), before):
        assert p.dtype == torch.float32 and torch.equal(p.detach(), b)


def test_the_scaler_gives_up_when_no_scale_can_help():
    """sqrt at 0: finite forward, infinite derivative: the VJP is non-finite at every scale."""
    theta = torch.ones(1, requires_grad=True)

    def f(t, y, th):
        return th * torch.sqrt(y)

    y0 = torch.zeros(3, requires_grad=True)
    stats = SolveStats()
    traj = odeint(f, y0, torch.linspace(0, 1, 5), precision="fp16", scaling="dynamic", args=(theta,),
                  max_retries=6, stats=stats)
    with pytest.raises(ScalerExhausted, match=r"gave up at step 3 of 4: the adjoint stayed non-finite after 6 "):
        traj[-1].sum().backward()
    assert stats.n_retries == 6  # exactly max_retries halvings, then it stops
    assert theta.dtype == torch.float32 and theta.grad is None


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_tuple_state_has_the_accuracy_of_a_single_tensor(precision):
    """The same ODE as a (z, logp) tuple and as one concatenated tensor: identical numbers at any precision."""
    field = TupleField(dtype=torch.float32)
    z0, l0 = torch.randn(5, 2), torch.zeros(5, 1)

    class Packed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.field = field

        def forward(self, t, y):
            dz, dl = self.field(t, (y[:, :2], y[:, 2:]))
            return torch.cat([dz, dl], 1)

    t = torch.linspace(1.0, 0.0, 9)
    z, logp = odeint(field, (z0, l0), t, precision=precision)
    joint = odeint(Packed(), torch.cat([z0, l0], 1), t, precision=precision)
    torch.testing.assert_close(torch.cat([z, logp], 2), joint, rtol=0, atol=0)
