"""The scaling axis: how a low-precision backward pass is kept inside the representable range."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from suite.registry import Registry

__all__ = ["Scaling", "SCALINGS", "OnOverflow"]


class OnOverflow(StrEnum):
    """What a training cell does with a non-finite gradient (a spec's `solver.on_overflow`)."""

    FAIL = "fail"  # the cell ends `nonfinite`
    SKIP = "skip"  # that optimizer step is skipped and counted, as torch.amp.GradScaler does


@dataclass(frozen=True)
class Scaling:
    name: str
    description: str


SCALINGS: Registry[Scaling] = Registry("scaling")
for _s in (
    Scaling("none", "no scaling: the backward runs in the compute dtype as it is"),
    Scaling("grad", "torch.amp.GradScaler: one global loss scale, halved on overflow, grown after clean steps"),
    Scaling("dynamic", "the engine's per-step adjoint scaling: power-of-two scale per step, retry on overflow"),
):
    SCALINGS.add(_s.name, _s)
