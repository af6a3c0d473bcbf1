"""The engine keeps PyTorch's gradient contract at every precision, and its precision policy is explicit.

Each test here failed on the engine before this contract was written down (the `.data` swap of the
caller's parameters, 16-bit incoming gradients, a scaler that retried 40 times for nothing, ...).
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import MLPField

from suite.engine import (
    AdjointScaler,
    FieldDtypeError,
    ScalerExhausted,
    SolveStats,
    odeint,
)
from suite.tasks.stiff_rk4 import StiffParams, closed_form, vector_field

T5 = torch.linspace(0.0, 1.0, 5)


def fp64_reference(field32: torch.nn.Module, y0: torch.Tensor, t: torch.Tensor):
    """Gradients of sum(y(T)²) for a float64 copy of the field: what every precision is compared with."""
    field64 = MLPField(dtype=torch.float64)
    field64.load_state_dict({k: v.double() for k, v in field32.state_dict().items()})
    y = y0.detach().double().requires_grad_(True)
    final = odeint(field64, y, t.double(), precision="fp64", output="final")
    return torch.autograd.grad(final.pow(2).sum(), [y, *field64.parameters()])


# ------------------------------------------------------------------ autograd.grad, hooks, clipping
@pytest.mark.parametrize(("precision", "scaling", "rtol"), [
    ("bf16", "none", 5e-2), ("fp16", "none", 1e-2), ("fp16", "dynamic", 1e-2), ("fp64", "none", 1e-6),
])
def test_autograd_grad_at_every_precision(precision, scaling, rtol):
    """fp64 with fp32 parameters included: the field runs on fp64 copies, gradients reach the fp32 originals."""
    field = MLPField(dtype=torch.float32)
    y0 = torch.randn(6, 3, requires_grad=True)
    final = odeint(field, y0, T5, precision=precision, scaling=scaling, output="final")
    grads = torch.autograd.grad(final.pow(2).sum(), [y0, *field.parameters()])
    for g, ref, leaf in zip(grads, fp64_reference(field, y0, T5), [y0, *field.parameters()]):
        assert g is not None and g.dtype == leaf.dtype and g.shape == leaf.shape
        assert float((g.double() - ref).abs().max() / ref.abs().max()) < rtol


def test_hooks_fire_once_with_the_full_gradient_and_clipping_works():
    field = MLPField(dtype=torch.float32)
    weight = field.l1.weight
    seen, accumulated = [], []
    weight.register_hook(lambda g: seen.append(g.clone()))
    weight.register_post_accumulate_grad_hook(lambda p: accumulated.append(p.grad.clone()))  # DDP-style
    y0 = torch.randn(6, 3)
    odeint(field, y0, torch.linspace(0, 1, 9), precision="fp16", scaling="dynamic").pow(2).sum().backward()
    assert len(seen) == 1 and len(accumulated) == 1  # once per backward, not once per step
    torch.testing.assert_close(seen[0], weight.grad)
    assert seen[0].dtype == torch.float32
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in field.parameters()))
    reported = torch.nn.utils.clip_grad_norm_(field.parameters(), max_norm=1e-3)
    torch.testing.assert_close(reported, total)
    clipped = torch.sqrt(sum(p.grad.pow(2).sum() for p in field.parameters()))
    assert abs(float(clipped) - 1e-3) < 1e-6


def test_the_callers_tensors_are_never_modified():
    field = MLPField(dtype=torch.float32)
    before = [(p.data_ptr(), p.dtype, p._version, p.detach().clone()) for p in field.parameters()]
    out = odeint(field, torch.randn(4, 3), T5, precision="bf16", scaling="dynamic")
    out.sum().backward()
    for p, (ptr, dtype, version, value) in zip(field.parameters(), before):
        assert (p.data_ptr(), p.dtype, p._version) == (ptr, dtype, version)
        assert torch.equal(p.detach(), value) and p.grad is not None


def test_backward_and_autograd_grad_agree():
    field = MLPField(dtype=torch.float32)
    y0 = torch.randn(4, 3, requires_grad=True)
    grads = torch.autograd.grad(odeint(field, y0, T5, precision="bf16").sum(), [y0, *field.parameters()])
    odeint(field, y0, T5, precision="bf16").sum().backward()
    for g, leaf in zip(grads, [y0, *field.parameters()]):
        torch.testing.assert_close(g, leaf.grad)


# ------------------------------------------------------------------ fields with constant components
def _both_backends(func, y0, t, params=()):
    from suite.backends import get_backend

    pytest.importorskip("torchdiffeq")
    results = []
    for backend in ("engine", "torchdiffeq"):
        traj = get_backend(backend).solver("rk4", "fp64", "none").odeint(func, y0, t, params=list(params) or None)
        final = [x[-1] for x in traj] if isinstance(traj, tuple) else [traj[-1]]
        loss = sum((k + 1.0) * x.pow(2).sum() for k, x in enumerate(final))
        leaves = [*(y0 if isinstance(y0, tuple) else (y0,)), *params]
        results.append(torch.autograd.grad(loss, leaves, allow_unused=True))
    return results


def test_a_field_with_no_autograd_path_is_a_constant():
    """f = -0.1·exp(-0.1 t), t not requiring grad: torchdiffeq's own test problem shape."""
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    ours, theirs = _both_backends(lambda t, y: -0.1 * torch.exp(-0.1 * t) * torch.ones_like(y), y0,
                                  torch.linspace(0, 1, 6, dtype=torch.float64))
    torch.testing.assert_close(ours[0], theirs[0])


def test_tuple_state_with_a_zero_derivative_component():
    weight = torch.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=torch.float64, requires_grad=True)

    def f(t, state):
        z, c = state
        return torch.tanh(z @ weight), torch.zeros_like(c)

    z0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(3, 1, dtype=torch.float64, requires_grad=True)
    ours, theirs = _both_backends(f, (z0, c0), torch.linspace(0, 1, 6, dtype=torch.float64), params=(weight,))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_time_augmented_state():
    """(y, s) with ds/dt = 1: every CNF with time augmentation."""
    field = MLPField(dim=2, dtype=torch.float64)

    def f(t, state):
        y, s = state
        return field(s[:1].squeeze(-1), y), torch.ones_like(s)

    y0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    s0 = torch.zeros(4, 1, dtype=torch.float64, requires_grad=True)
    ours, theirs = _both_backends(f, (y0, s0), torch.linspace(0, 1, 6, dtype=torch.float64),
                                  params=tuple(field.parameters()))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ the ways to give the field its tensors
def test_the_ways_to_give_a_field_its_parameters_agree():
    """A Module, a closure over one (found by the engine), the same closure with params=[...], args=(...)."""
    field = MLPField(dtype=torch.float32)
    y0 = torch.randn(4, 3)
    weights = list(field.parameters())

    def grads(func, **kw):
        return torch.autograd.grad(odeint(func, y0, T5, output="final", **kw).sum(), weights)

    reference = grads(field)
    for other in (grads(lambda t, y: field(t, y)), grads(lambda t, y: field(t, y), params=weights),
                  grads(lambda t, y, *ws: torch.func.functional_call(field, dict(zip(
                      [n for n, _ in field.named_parameters()], ws)), (t, y)), args=weights)):
        for a, b in zip(other, reference):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with torch.no_grad():  # no gradient wanted: the closure runs all the same
        assert torch.isfinite(odeint(lambda t, y: field(t, y), y0, T5)).all()


def test_double_backward_is_refused_not_wrong():
    field = MLPField(dtype=torch.float32)
    loss = odeint(field, torch.randn(4, 3), T5, output="final").pow(2).sum()
    grads = torch.autograd.grad(loss, list(field.parameters()), create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        sum((g * g).sum() for g in grads).backward()  # a gradient penalty / Hessian-vector product


def test_a_closure_runs_on_cast_copies_of_what_it_captures_under_the_full_cast_policy():
    matrix = torch.randn(3, 3)  # a captured fp32 matrix, no grad: replaced by a bf16 copy in every call
    seen = []

    def f(t, y):
        seen.append(matrix.dtype)
        return y @ matrix

    assert torch.isfinite(odeint(f, torch.randn(4, 3), T5, precision="bf16")).all()
    assert set(seen) == {torch.bfloat16} and matrix.dtype == torch.float32


def test_a_closure_creating_fp32_tensors_is_refused_under_the_full_cast_policy():
    """What the field makes itself in the default dtype cannot be substituted: refused with the way out."""
    with pytest.raises(FieldDtypeError, match=r"returned float32 .* dtype=y\.dtype"):
        odeint(lambda t, y: y * torch.ones(3), torch.randn(4, 3), T5, precision="bf16")
    with pytest.raises(FieldDtypeError, match="dtype error"):
        odeint(lambda t, y: y @ torch.eye(3), torch.randn(4, 3), T5, precision="fp16")
    final = odeint(lambda t, y: y @ torch.eye(3), torch.randn(4, 3), T5, precision="bf16", policy="autocast")
    assert torch.isfinite(final).all()  # the autocast policy covers it


def test_a_bound_method_of_a_module_runs_on_cast_copies():
    class SDEStyle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(3, 3) * 0.3)
            self.dtypes = []

        def f(self, t, y):
            self.dtypes.append(self.weight.dtype)
            return torch.tanh(y @ self.weight)

    module = SDEStyle()
    final = odeint(module.f, torch.randn(4, 3), T5, precision="bf16", output="final")
    final.sum().backward()
    assert set(module.dtypes) == {torch.bfloat16}
    assert module.weight.dtype == torch.float32 and module.weight.grad.dtype == torch.float32


def test_batchnorm_statistics_are_updated_once_per_forward():
    class BNField(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)
            self.bn = torch.nn.BatchNorm1d(3)

        def forward(self, t, y):
            return self.bn(self.lin(y))

    stats = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        field = BNField()
        final = odeint(field, torch.randn(8, 3), T5, precision=precision, output="final")
        after_forward = field.bn.running_mean.clone()
        final.sum().backward()  # the backward's recomputation must not update them again
        assert torch.equal(field.bn.running_mean, after_forward)
        assert int(field.bn.num_batches_tracked) == 4 * 4  # 4 steps × 4 stages, once each
        assert field.bn.running_mean.dtype == torch.float32
        stats[precision] = after_forward
    assert float(stats["fp32"].abs().min()) > 0
    torch.testing.assert_close(stats["bf16"], stats["fp32"], rtol=5e-2, atol=5e-3)


# ------------------------------------------------------------------ the incoming gradient and the scaler
def _stiff_final(precision, scaling, output="final", scaler=None, stats=None):
    params = StiffParams()
    theta = torch.tensor(params.theta, requires_grad=True)
    y0 = torch.tensor([params.y0], dtype=torch.float64).to(torch.float16).float().requires_grad_(True)
    out = odeint(vector_field(theta), y0, torch.linspace(0, params.T, 400), precision=precision,
                 scaling=scaling, params=[theta], output=output, scaler=scaler, stats=stats)
    return (out if output == "final" else out[-1].float()), y0, theta


@pytest.mark.parametrize("factor", [2.0**-34, 1e-10, 1e-8, 1e10])
def test_tiny_and_huge_loss_scales_reach_the_adjoint_unquantized(factor):
    reference, y0r, _ = _stiff_final("fp16", "dynamic")
    (g_ref,) = torch.autograd.grad((0.5 * reference**2).sum(), [y0r])
    final, y0, _ = _stiff_final("fp16", "dynamic")
    (g,) = torch.autograd.grad(factor * (0.5 * final**2).sum(), [y0])
    relative = abs(float(g) / factor - float(g_ref)) / abs(float(g_ref))
    if math.log2(factor).is_integer():
        assert relative == 0.0  # a power of two moves the scale only: bit for bit the same gradient
    else:
        assert relative < 2e-3  # fp16 rounding of the scaled seeds, nothing more


def test_a_16_bit_output_quantizes_the_incoming_gradient():
    """Why the default output is the accumulation dtype: the same 1e-10 loss through a 16-bit output."""
    final, y0, _ = _stiff_final("fp16", "dynamic", output="storage")
    (g,) = torch.autograd.grad(1e-10 * (0.5 * final**2).sum(), [y0])
    assert float(g) == 0.0  # 1e-10·y(T) is below fp16's smallest subnormal


def test_the_scaler_gives_up_at_once_when_the_adjoint_itself_is_nonfinite():
    stats = SolveStats()
    final, y0, _ = _stiff_final("fp16", "dynamic", stats=stats)
    with pytest.raises(ScalerExhausted, match="incoming adjoint is itself non-finite"):
        (final * float("inf")).sum().backward()
    assert stats.n_retries == 0


def test_the_scaler_gives_up_at_once_when_the_forward_overflowed():
    stats = SolveStats()
    y0 = torch.full((2,), 60000.0, requires_grad=True)
    final = odeint(lambda t, y: 1e-3 * y * y, y0, T5, precision="fp16", scaling="dynamic", stats=stats,
                   output="final")
    with pytest.raises(ScalerExhausted, match="stored forward trajectory is non-finite"):
        final.sum().backward()
    assert stats.n_retries == 0


def test_the_scaler_keeps_what_it_learned_across_iterations():
    scaler = AdjointScaler(torch.float16)
    retries = []
    for _ in range(3):
        stats = SolveStats()
        final, y0, theta = _stiff_final("fp16", "dynamic", scaler=scaler, stats=stats)
        (0.5 * final**2).sum().backward()
        retries.append(stats.n_retries)
        exact = closed_form(StiffParams())["grad_y0"]
        assert abs(float(y0.grad) - exact) / exact < 2e-2
    assert retries[0] > 0 and retries[1:] == [0, 0], retries
    assert stats.n_host_syncs_backward == 1


def test_on_failure_nonfinite_hands_back_nan_gradients():
    theta = torch.ones(1, requires_grad=True)
    stats = SolveStats()
    final = odeint(lambda t, y, th: th * torch.sqrt(y), torch.zeros(3, requires_grad=True), T5,
                   precision="fp16", scaling="dynamic", args=(theta,), on_failure="nonfinite", stats=stats,
                   output="final")
    final.sum().backward()
    assert torch.isnan(theta.grad).all() and "gave up" in stats.gave_up


# ------------------------------------------------------------------ policies and times
def test_autocast_policy_runs_the_field_under_autocast_with_fp32_parameters():
    field = MLPField(dtype=torch.float32)
    seen = []
    handle = field.l1.register_forward_hook(
        lambda m, inp, out: seen.append((m.weight.dtype, out.dtype, torch.is_autocast_enabled("cpu"))))
    y0 = torch.randn(6, 3, requires_grad=True)
    final = odeint(field, y0, T5, precision="bf16", policy="autocast", output="final")
    grads = torch.autograd.grad(final.pow(2).sum(), [y0, *field.parameters()])
    handle.remove()
    assert set(seen) == {(torch.float32, torch.bfloat16, True)}
    for g, ref in zip(grads, fp64_reference(field, y0, T5)):
        assert float((g.double() - ref).abs().max() / ref.abs().max()) < 5e-2


def test_stage_times_are_formed_in_the_accumulation_dtype():
    seen = []

    def f(t, y):
        seen.append(t)
        return -y

    t = torch.tensor([1000.0, 1000.3, 1000.6])
    odeint(f, torch.ones(2), t, precision="bf16", method="rk4")
    h = t[1] - t[0]
    expected = [(t[i] + c * h).to(torch.bfloat16) for i in range(2) for c in (0.0, 0.5, 0.5, 1.0)]
    assert all(a.dtype == torch.bfloat16 and a.dim() == 0 for a in seen)
    assert [float(a) for a in seen] == [float(b) for b in expected]


def test_the_scaler_stops_at_the_smallest_useful_scale():
    """sqrt at 0 has an infinite derivative: halving is tried down to fp16's smallest normal, not 40 times."""
    stats = SolveStats()
    final = odeint(lambda t, y, th: th * torch.sqrt(y), torch.zeros(3), T5, precision="fp16", scaling="dynamic",
                   args=(torch.ones(1, requires_grad=True),), stats=stats, output="final")
    with pytest.raises(ScalerExhausted, match="smallest scale the compute dtype can hold"):
        final.sum().backward()
    assert stats.n_retries < 40


def test_a_field_that_takes_gradients_inside_itself():
    """FFJORD-style: the divergence by autograd inside f, on the forward (no grad outside) and the backward."""
    field = MLPField(dim=2, dtype=torch.float64)

    def cnf(t, state):
        z, _ = state
        with torch.enable_grad():
            z = z if z.requires_grad else z.detach().requires_grad_(True)
            dz = field(t, z)
            div = sum(torch.autograd.grad(dz[:, k].sum(), z, create_graph=True)[0][:, k] for k in range(2))
        return dz, -div.unsqueeze(1)

    z0 = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    l0 = torch.zeros(5, 1, dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    z, logp = odeint(cnf, (z0, l0), t, precision="fp64", output="final", params=list(field.parameters()))
    grads = torch.autograd.grad(z.pow(2).sum() + logp.sum(), [z0, *field.parameters()])
    from helpers import unrolled_rk

    zr, lr = unrolled_rk(cnf, (z0, l0), t, "rk4")
    reference = torch.autograd.grad(zr[-1].pow(2).sum() + lr[-1].sum(), [z0, *field.parameters()])
    for a, b in zip(grads, reference):
        torch.testing.assert_close(a, b)
