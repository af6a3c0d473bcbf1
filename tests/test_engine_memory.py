"""The memory knob: every setting takes the same steps, so gradients agree to rounding; memory is what it says.

Gradients are compared setting against setting (bitwise on CPU, where every kernel is deterministic, and
to rounding in general), and in float64 against central finite differences of the discrete solve.
Saved bytes are counted with saved-tensor hooks (exact, device independent); nothing here is timed.
"""

from __future__ import annotations

import pytest
import torch
from conftest import MLPField, TupleField

from suite.engine import MEMORY_SETTINGS, odeint, parse_memory
from suite.tasks._training import saved_for_backward_bytes

SETTINGS = ["states", "stages", "checkpoint", "checkpoint:1", "checkpoint:3", "checkpoint:64"]
PRECISIONS = [("fp32", "none"), ("bf16", "none"), ("fp16", "none"), ("fp16", "dynamic"), ("fp64", "none")]


def _problem(kind: str, dtype):
    torch.manual_seed(0)
    if kind == "module":
        field = MLPField(dim=3, dtype=dtype)
        return field, torch.randn(4, 3, dtype=dtype), list(field.parameters())
    if kind == "closure":
        weight = (0.5 * torch.randn(3, 3, dtype=dtype)).requires_grad_(True)
        shift = torch.randn(3, dtype=dtype, requires_grad=True)
        return (lambda t, y: torch.tanh(y @ weight) * torch.cos(t) + shift), torch.randn(4, 3, dtype=dtype), \
            [weight, shift]
    field = TupleField(dim=2, dtype=dtype)
    return field, (torch.randn(4, 2, dtype=dtype), torch.zeros(4, 1, dtype=dtype)), list(field.parameters())


def _grads(kind, memory, precision, scaling, dtype=torch.float32, t_grad=True, output="accumulate"):
    func, y0, params = _problem(kind, dtype)
    y0 = tuple(y.requires_grad_(True) for y in y0) if isinstance(y0, tuple) else y0.requires_grad_(True)
    t = torch.linspace(0.0, 1.0, 12, dtype=dtype).requires_grad_(t_grad)
    out = odeint(func, y0, t, precision=precision, scaling=scaling, memory=memory, output=output)
    parts = out if isinstance(out, tuple) else (out,)
    if output == "final":
        loss = sum((k + 1.0) * p.pow(2).sum() for k, p in enumerate(parts))
    else:
        loss = sum((k + 1.0) * p[-1].pow(2).sum() + p[4].sum() for k, p in enumerate(parts))
    leaves = [*(y0 if isinstance(y0, tuple) else (y0,)), *params] + ([t] if t_grad else [])
    return torch.autograd.grad(loss, leaves, allow_unused=True)


@pytest.mark.parametrize(("precision", "scaling"), PRECISIONS)
@pytest.mark.parametrize("kind", ["module", "closure", "tuple"])
def test_every_memory_setting_gives_the_same_gradients(kind, precision, scaling):
    reference = _grads(kind, "states", precision, scaling)
    for memory in SETTINGS[1:]:
        for a, b in zip(_grads(kind, memory, precision, scaling), reference):
            if b is None:
                assert a is None or not a.any()
                continue
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=lambda m, s=memory: f"{s}: {m}")


@pytest.mark.parametrize("memory", ["stages", "checkpoint:4"])
def test_output_final_and_no_time_gradient(memory):
    for a, b in zip(_grads("module", memory, "bf16", "none", t_grad=False, output="final"),
                    _grads("module", "states", "bf16", "none", t_grad=False, output="final")):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("memory", SETTINGS)
def test_gradients_match_finite_differences_in_fp64(memory):
    """gradcheck: y0, t and a captured weight against central differences of the discrete solve."""
    torch.manual_seed(1)
    weight = (0.5 * torch.randn(2, 2, dtype=torch.float64)).requires_grad_(True)
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 7, dtype=torch.float64, requires_grad=True)

    def solve(y0, t, weight):
        return odeint(lambda tt, y: torch.tanh(y @ weight) * torch.sin(tt + 1.0), y0, t, precision="fp64",
                      memory=memory)

    assert torch.autograd.gradcheck(solve, (y0, t, weight))


def test_saved_bytes_follow_the_setting():
    """states: n+1 16-bit states; checkpoint:K: ⌈n/K⌉ fp32 states; stages: more than states (activations)."""
    field = MLPField(dim=3, width=16, dtype=torch.float32)
    y0 = torch.randn(32, 3, requires_grad=True)
    n = 64
    t = torch.linspace(0.0, 1.0, n + 1)
    state = 32 * 3

    def saved(memory, precision="bf16"):
        _, nbytes = saved_for_backward_bytes(lambda: odeint(field, y0, t, precision=precision, memory=memory,
                                                            output="final"))
        return nbytes - t.numel() * 4  # the grid is saved too

    assert saved("states") == (n + 1) * state * 2
    assert saved("checkpoint:8") == 8 * state * 4
    assert saved("checkpoint") == 8 * state * 4  # ⌈√64⌉ = 8
    assert saved("checkpoint:64") == state * 4
    assert saved("stages") > 4 * saved("states")


def test_stages_updates_batchnorm_statistics_once_per_forward():
    class BNField(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)
            self.bn = torch.nn.BatchNorm1d(3, momentum=None)  # cumulative average: counts every update

        def forward(self, t, y):
            return self.bn(self.lin(y))

    counts = {}
    for memory in ("states", "stages", "checkpoint:2"):
        field = BNField()
        odeint(field, torch.randn(8, 3), torch.linspace(0, 1, 5), memory=memory).sum().backward()
        counts[memory] = int(field.bn.num_batches_tracked)
    assert counts == {"states": 16, "stages": 16, "checkpoint:2": 16}  # 4 steps × 4 stages, forward only


@pytest.mark.parametrize("bad", ["stage", "checkpoint:0", "checkpoint:x", "states:2", "", 3])
def test_a_bad_memory_setting_names_the_allowed_ones(bad):
    with pytest.raises((ValueError, TypeError), match="checkpoint:K"):
        odeint(lambda t, y: -y, torch.ones(2), torch.linspace(0, 1, 3), memory=bad)
    with pytest.raises((ValueError, TypeError), match="checkpoint:K"):
        parse_memory(bad)
    assert "checkpoint:K" in MEMORY_SETTINGS
