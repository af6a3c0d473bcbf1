"""Fields that capture tensors get torchdiffeq.odeint's gradients: the patterns its and torchsde's users write.

Every case is compared with `torchdiffeq.odeint` on the same fixed grid and tableau (torchdiffeq's "rk4" is
the 3/8 rule: the engine's "rk4-38"), in float64 to rounding and in float32 to 1e-6, and then run at every
precision and scaling the engine offers, where the closure must give what the same field passed as a
Module gives.
"""

from __future__ import annotations

import pytest
import torch

from suite.engine import CapturedParameterError, odeint

torchdiffeq = pytest.importorskip("torchdiffeq")

METHODS = [("euler", "euler"), ("midpoint", "midpoint"), ("rk4-38", "rk4")]  # (engine, torchdiffeq)


def _mlp(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).to(dtype)


def _loss(out):
    """Weights every component and two times, so each output's gradient matters."""
    parts = out if isinstance(out, tuple) else (out,)
    return sum((k + 1.0) * (o[-1] ** 2).sum() + o[1].sum() for k, o in enumerate(parts))


def _compare(make_field, make_y0, extra_leaves, dtype, method, t_grad, rtol):
    """Gradients of every leaf (y0, t, captured tensors) from the engine and from torchdiffeq.odeint."""
    ours, theirs = [], []
    for solver, grads in (("engine", ours), ("torchdiffeq", theirs)):
        torch.manual_seed(0)  # the same field for both solvers
        f, leaves = make_field()
        y0 = make_y0()
        t = torch.linspace(0.0, 1.0, 6, dtype=dtype).requires_grad_(t_grad)
        if solver == "engine":
            out = odeint(f, y0, t, method=method[0], precision="fp64" if dtype == torch.float64 else "fp32")
        else:
            out = torchdiffeq.odeint(f, y0, t, method=method[1])
        inputs = [*(y0 if isinstance(y0, tuple) else (y0,)), *leaves, *extra_leaves] + ([t] if t_grad else [])
        grads.extend(torch.autograd.grad(_loss(out), inputs, allow_unused=True))
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if b is None:
            assert a is None or float(a.abs().max()) == 0.0, f"input {k}: torchdiffeq gives no gradient"
            continue
        assert a is not None, f"input {k}: the engine gave no gradient"
        scale = float(b.abs().max()) or 1.0
        # dL/dt_i sums two steps' contributions that nearly cancel at interior times: 3x the tolerance
        tol = rtol * (3.0 if t_grad and k == len(ours) - 1 else 1.0)
        assert float((a - b).abs().max()) <= tol * scale, f"input {k}: {float((a - b).abs().max())} vs {scale}"


PATTERNS = {}


def pattern(fn):
    PATTERNS[fn.__name__] = fn
    return fn


@pattern
def lambda_over_a_module(dtype):
    net = _mlp(dtype)
    return (lambda t, y: net(y) * torch.cos(t)), list(net.parameters())


@pattern
def function_over_plain_leaves(dtype):
    weight = torch.randn(2, 2, dtype=dtype).mul_(0.5).requires_grad_(True)
    shift = torch.randn(2, dtype=dtype, requires_grad=True)

    def f(t, y):
        return torch.tanh(y @ weight) + shift * t

    return f, [weight, shift]


@pattern
def captured_non_leaf(dtype):
    """W = P Pᵀ, computed outside the field: the gradient stops at W and autograd carries it into P."""
    p = torch.randn(2, 2, dtype=dtype).mul_(0.5).requires_grad_(True)
    w = p @ p.T
    return (lambda t, y: -(y @ w)), [p]


@pattern
def module_other_than_the_one_passed(dtype):
    class Outer(torch.nn.Module):  # owns nothing; calls a network it holds as a plain attribute
        def __init__(self, inner):
            super().__init__()
            self.__dict__["inner"] = inner

        def forward(self, t, y):
            return self.inner(y)

    net = _mlp(dtype)
    return Outer(net), list(net.parameters())


@pattern
def bound_method_of_a_module(dtype):
    class SDEStyle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _mlp(dtype)
            self.gain = torch.nn.Parameter(torch.tensor(0.7, dtype=dtype))

        def f(self, t, y):
            return self.gain * self.net(y)

    module = SDEStyle()
    return module.f, list(module.parameters())


@pattern
def module_passed_and_captured(dtype):
    """The passed Module's parameters also reached through a closure variable: counted once."""
    net = _mlp(dtype)

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, y):
            return self.net(y) + 0.1 * (y @ net[2].weight[:, :2])

    return Field(), list(net.parameters())


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("method", METHODS, ids=[m[0] for m in METHODS])
@pytest.mark.parametrize("t_grad", [False, True], ids=["t", "t-requires-grad"])
def test_single_state_patterns_match_torchdiffeq(name, method, t_grad):
    y0 = torch.randn(3, 2, dtype=torch.float64)
    _compare(lambda: PATTERNS[name](torch.float64), lambda: y0.clone().requires_grad_(True), [], torch.float64,
             method, t_grad, 1e-10)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_single_state_patterns_match_torchdiffeq_in_fp32(name):
    y0 = torch.randn(3, 2)
    _compare(lambda: PATTERNS[name](torch.float32), lambda: y0.clone().requires_grad_(True), [], torch.float32,
             METHODS[2], True, 1e-6)


@pytest.mark.parametrize("method", METHODS, ids=[m[0] for m in METHODS])
def test_tuple_state_whose_components_share_parameters(method):
    """torchdiffeq's (y0, y0) gradcheck shape: one network on both components, a closure over it."""
    y0 = torch.randn(3, 2, dtype=torch.float64)

    def make():
        net = _mlp(torch.float64)
        return (lambda t, y: (net(y[0]), -net(y[1]) * t)), list(net.parameters())

    _compare(make, lambda: (y0.clone().requires_grad_(True), y0.clone().requires_grad_(True)), [],
             torch.float64, method, True, 1e-10)


@pytest.mark.parametrize("t_grad", [False, True])
def test_time_augmented_state(t_grad):
    """(y, τ) with dτ/dt = 1 and the network in a Module the closure captures: torchdiffeq's _NeuralF case."""
    y0 = torch.randn(3, 2, dtype=torch.float64)

    def make():
        net = _mlp(torch.float64)
        return (lambda t, s: (net(s[0]) * torch.sin(s[1]), torch.ones_like(s[1]))), list(net.parameters())

    _compare(make, lambda: (y0.clone().requires_grad_(True), torch.zeros(3, 1, dtype=torch.float64,
                                                                         requires_grad=True)),
             [], torch.float64, METHODS[2], t_grad, 1e-10)


def test_gradcheck_of_a_closure_over_a_module():
    """torchdiffeq's own gradcheck: y0 and t against finite differences, the field a closure."""
    net = _mlp(torch.float64)
    y0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64, requires_grad=True)
    weight = net[0].weight

    def solve(y0, t, weight):
        return odeint(lambda tt, y: net(y) + y @ weight[:2, :2], y0, t, method="rk4", precision="fp64")

    assert torch.autograd.gradcheck(solve, (y0, t, weight))


# ------------------------------------------------------------------ every precision and scaling
PRECISIONS = [("fp32", "none"), ("bf16", "none"), ("fp16", "none"), ("fp16", "dynamic")]


@pytest.mark.parametrize(("precision", "scaling"), PRECISIONS)
@pytest.mark.parametrize("policy", ["cast", "autocast"])
def test_a_closure_gets_the_gradients_of_the_same_field_passed_as_a_module(precision, scaling, policy):
    """Under the full-cast policy the closure runs on the same compute-dtype copies as the Module (equal
    gradients); under autocast, autograd sums its captured fp32 leaves' stage gradients itself (rounding)."""
    net = _mlp(torch.float32)

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, y):
            return self.net(y)

    y0 = torch.randn(5, 2, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 9)
    results = []
    for f in (Field(), lambda tt, y: net(y)):
        out = odeint(f, y0, t, precision=precision, scaling=scaling, policy=policy, output="final")
        results.append(torch.autograd.grad(out.pow(2).sum(), [y0, *net.parameters()]))
    low = precision in ("bf16", "fp16")
    for a, b in zip(*results):
        assert a.dtype == b.dtype == torch.float32
        if policy == "cast" and low:
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        else:
            tol = 2e-2 if precision == "bf16" else 2e-3 if low else 1e-6
            assert float((a - b).abs().max()) <= tol * float(b.abs().max())


@pytest.mark.parametrize(("precision", "scaling"), PRECISIONS[1:])
def test_captured_leaves_and_non_leaves_at_low_precision_against_fp64(precision, scaling):
    p = torch.randn(2, 2).mul_(0.5).requires_grad_(True)
    shift = torch.randn(2, requires_grad=True)
    y0 = torch.randn(4, 2, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 9)

    def grads(dtype, prec, sc):
        pp, ss, yy = (x.detach().to(dtype).requires_grad_(True) for x in (p, shift, y0))
        w = pp @ pp.T
        out = odeint(lambda tt, y: torch.tanh(y @ w) + ss, yy, t.to(dtype), precision=prec, scaling=sc,
                     output="final")
        return torch.autograd.grad(out.pow(2).sum(), [yy, pp, ss])

    for a, b in zip(grads(torch.float32, precision, scaling), grads(torch.float64, "fp64", "none")):
        assert a.dtype == torch.float32
        assert float((a.double() - b).abs().max()) <= 5e-2 * float(b.abs().max())


# ------------------------------------------------------------------ what cannot be seen is refused
def test_a_tensor_reached_behind_the_solvers_back_is_refused():
    """A field hiding its operations from torch-function modes (here on purpose) would leave the tensor
    without a gradient: refused, with what to pass."""
    weight = torch.randn(2, 2, requires_grad=True)

    def hidden(t, y):
        with torch._C.DisableTorchFunction():
            return torch.tanh(y @ weight)

    y0 = torch.randn(3, 2)
    with pytest.raises(CapturedParameterError, match=r"params=\[\.\.\.\]"):
        odeint(hidden, y0, torch.linspace(0, 1, 4))
    final = odeint(hidden, y0, torch.linspace(0, 1, 4), params=[weight], output="final")
    (g,) = torch.autograd.grad(final.sum(), [weight])
    assert torch.isfinite(g).all() and float(g.abs().max()) > 0
