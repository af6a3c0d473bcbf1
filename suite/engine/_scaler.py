"""Dynamic per-step adjoint scaling for the engine's backward pass.

    S_i = 2^(E - e_i),  e_i = the binary exponent of max|a_i|  (so S_i·max|a_i| < 2^E ≤ 2^15)

E = top - headroom is the target exponent. After each attempt the *scaled* outputs decide: an overflow
(inf/NaN in the VJP) halves the scale and the step is retried (E - 1); a clean step whose largest scaled
output stayed below max/8 doubles it (E + 1, at most top - 1). Deciding on scaled quantities is what keeps the
scale from growing until it overflows (the reference implementation compared the unscaled adjoint).

Everything lives in device tensors: no host synchronization per step. The backward loop reads the state
once per round (`snapshot`). An `AdjointScaler` kept across solves keeps its learned E, so a training loop
does not pay the same retries every iteration.

Giving up, with the reason: when the adjoint itself is non-finite (the loss's gradient or an earlier step
was inf/NaN) or the stored forward trajectory is non-finite, no scale can help and the scaler gives up at
the first rejected attempt; otherwise after `max_retries` halvings at one step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import torch

from suite.deadline import unbind_checked

__all__ = ["AdjointScaler", "ScalerExhausted", "ScalerRound", "GIVE_UP_REASONS", "OnFailure"]

GIVE_UP_REASONS = {
    1: "the adjoint stayed non-finite after {retries} halvings of the scale at this step (the vector field's "
       "vector-Jacobian product overflows at every scale tried, or is inf/NaN for finite inputs)",
    2: "the incoming adjoint is itself non-finite (the loss's gradient, or an earlier step, is inf/NaN): "
       "no scale can fix that",
    3: "the stored forward trajectory is non-finite (the forward solve overflowed): no scale can fix that",
    4: "the adjoint stayed non-finite down to the smallest scale the compute dtype can hold (halving once more "
       "would flush the scaled adjoint to zero)",
}


class OnFailure(StrEnum):
    """What `odeint` does when the dynamic scaler gives up (`on_failure=`)."""

    RAISE = "raise"  # ScalerExhausted
    NONFINITE = "nonfinite"  # NaN gradients: a training loop skips the step and counts it, as GradScaler does


class ScalerExhausted(FloatingPointError):
    """The adjoint could not be made finite at one step (see the message for why)."""


class AdjointScaler:
    """The dynamic scaler's policy and its learned state; pass the same instance to successive solves."""

    def __init__(self, compute: torch.dtype, initial_headroom: int = 5, max_retries: int = 40) -> None:
        info = torch.finfo(compute)
        self.compute = compute
        self.top = min(int(math.floor(math.log2(info.max))), 15)
        self.safe_max = info.max / 8.0
        self.initial_headroom = initial_headroom
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries = max_retries
        # Scaled adjoints live near 2^E: below the compute dtype's smallest normal, halving only flushes them.
        self.exponent_floor = int(math.floor(math.log2(info.tiny)))
        self._target: torch.Tensor | None = None  # learned E, a device tensor kept across solves
        self._profile: torch.Tensor | None = None  # E accepted at each step last time (same grid size)

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        """The learned state (E and the per-step profile), for a training checkpoint."""
        return {"target": self._target, "profile": self._profile}

    def load_state_dict(self, state: dict[str, torch.Tensor | None]) -> None:
        self._target, self._profile = state["target"], state["profile"]

    @property
    def headroom(self) -> float | None:
        """The learned headroom (top - E), read from the device (a host sync; for records, not for loops)."""
        return None if self._target is None else float(self.top - self._target.item())

    def start(self, device: torch.device, accumulate: torch.dtype, n_steps: int,
              trajectory_finite: torch.Tensor) -> ScalerRound:
        if self._target is None or self._target.device != device:
            self._target = torch.full((), self.top - self.initial_headroom, dtype=torch.int64, device=device)
        if self._profile is None or self._profile.device != device or self._profile.numel() != n_steps:
            self._profile = torch.full((n_steps,), self.top - 1, dtype=torch.int64, device=device)
        return ScalerRound(self, device, accumulate, n_steps, trajectory_finite)


class ScalerRound:
    """The scaler's device state during one backward pass (a few 0-d tensors).

    Steps run optimistically in rounds the host launches without looking: an attempt whose scaled outputs
    are non-finite is rejected and freezes the rest of its round (`go` turns False), and the host, reading
    the state once at the round's end, retries that step with the scale halved. A round after a retry is
    short (1, 2, 4, ... steps) so that few attempts are wasted while the adjoint is hard to scale.
    """

    def __init__(self, policy: AdjointScaler, device, accumulate, n_steps: int, trajectory_finite) -> None:
        self.policy = policy
        kw = {"device": device}
        self.E = policy._target  # updated in place: the learned value persists in the policy
        self.go = torch.ones((), dtype=torch.bool, **kw)
        self.accepted = torch.zeros((), dtype=torch.int64, **kw)
        self.scales = torch.ones(n_steps, dtype=accumulate, **kw)
        self.scale_views = unbind_checked(self.scales)
        # The headroom a step needed last time caps it this time: a training loop learns where along the
        # trajectory the adjoint is hard to scale, instead of paying the same retries every iteration.
        self.profile_views = unbind_checked(policy._profile)
        self.one = torch.ones((), dtype=accumulate, **kw)
        self.trajectory_finite = trajectory_finite
        self._current: torch.Tensor = self.one
        self._start = (self.E.clone(), policy._profile.clone())

    def forget(self) -> None:
        """After giving up: what this backward's futile retries taught (a scale halved dozens of times) is
        not a lesson, so the learned state goes back to where this backward found it."""
        self.E.copy_(self._start[0])
        self.policy._profile.copy_(self._start[1])

    def new_round(self) -> None:
        self.go.fill_(True)
        self.accepted.zero_()

    def scale(self, adjoint_max: torch.Tensor, step: int) -> torch.Tensor:
        """S (0-d) for this attempt from max|a| (a 0-d device tensor): 2^(E - exponent(max|a|)), with E no
        higher than what this step was accepted at last time (plus the one step of growth it earned)."""
        self.E.clamp_(max=self.profile_views[step])
        power = (self.E - torch.frexp(adjoint_max)[1]).clamp_(-149, 127)  # S finite and nonzero in fp32
        self._current = torch.ldexp(self.one, power)
        return self._current

    def observe(self, scaled_max: torch.Tensor, step: int) -> torch.Tensor:
        """Accept the attempt at host step `step` iff its scaled outputs are finite and the round is not frozen;
        grow the scale after a clean step whose largest scaled output stayed below max/8."""
        self.go.logical_and_(torch.isfinite(scaled_max))
        self.E.add_((scaled_max < self.policy.safe_max) & self.go).clamp_(max=self.policy.top - 1)
        # (the floor is enforced by the host: a retry below it is a give-up, not a clamp)
        self.accepted.add_(self.go)
        self.scale_views[step].copy_(self._current)
        self.profile_views[step].copy_(self.E)  # frozen attempts write values that their redo overwrites
        return self.go

    def snapshot(self, adjoint: list[torch.Tensor]) -> RoundState:
        """The one host synchronization of a round."""
        adjoint_finite = torch.stack([torch.isfinite(a).all() for a in adjoint]).all()
        values = torch.stack([
            self.go.double(), self.accepted.double(), adjoint_finite.double(), self.trajectory_finite.double(),
            self.scales.min().double(), self.scales.max().double(), self.scales[0].double(), self.E.double(),
        ]).tolist()
        go, accepted, adj_ok, traj_ok, lo, hi, final, target = values
        return RoundState(bool(go), int(accepted), bool(adj_ok), bool(traj_ok), lo, hi, final,
                          self.policy.top - target)

    def halve(self) -> None:
        """The retry: one more bit of headroom (a device op; no sync)."""
        self.E.sub_(1)


@dataclass
class RoundState:
    go: bool
    accepted: int
    adjoint_finite: bool
    trajectory_finite: bool
    scale_min: float
    scale_max: float
    scale_final: float
    headroom: float
