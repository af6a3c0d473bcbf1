"""Reference integrators for the tests: plain autograd through an unrolled loop."""

from __future__ import annotations

import torch

from suite.engine import get_method


def unrolled_rk(func, y0, t, method: str):
    """Fixed-grid explicit RK in the input dtype, differentiated by ordinary autograd."""
    c, a, b = get_method(method).floats()
    is_tuple = isinstance(y0, tuple)
    y = list(y0) if is_tuple else [y0]
    traj = [[v] for v in y]
    for i in range(len(t) - 1):
        h = t[i + 1] - t[i]
        ks = []
        for j in range(len(b)):
            stage = [yc + h * sum(coef * k[n] for coef, k in zip(a[j], ks) if coef != 0.0) if j else yc
                     for n, yc in enumerate(y)]
            out = func(t[i] + c[j] * h, tuple(stage) if is_tuple else stage[0])
            ks.append(list(out) if is_tuple else [out])
        y = [yc + h * sum(coef * k[n] for coef, k in zip(b, ks) if coef != 0.0) for n, yc in enumerate(y)]
        for n, v in enumerate(y):
            traj[n].append(v)
    stacked = [torch.stack(tr) for tr in traj]
    return tuple(stacked) if is_tuple else stacked[0]
