"""What one engine solve did: counts and the adjoint-scaling history, returned to the caller."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["SolveStats"]


@dataclass
class SolveStats:
    """Filled by `odeint` (forward fields) and by its backward pass (the rest).

    Pass a fresh instance per solve; the engine never keeps state between solves.
    """

    n_steps: int = 0
    nfe_forward: int = 0
    nfe_backward: int = 0
    n_backward_attempts: int = 0
    n_retries: int = 0
    scale_final: float | None = None
    scale_min: float | None = None
    scale_max: float | None = None
    n_host_syncs_forward: int = 0
    n_host_syncs_backward: int = 0
    headroom_final: float | None = None
    gave_up: str | None = None
    policy: str = "cast"
    memory: str = "states"
    backward_done: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)
