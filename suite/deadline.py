"""A cell's deadline, reaching inside a solve: `timeout_s` stops a cell within one step or one vector-field
call of its deadline, however many steps one solve takes.

The cell kernel sets the deadline for the length of a cell (`cell_deadline`); the engine's step loops and
every backend's vector-field calls call `check_deadline`, which raises `CellTimeout` once it has passed (a
module-level value, not a context variable: autograd may run a backward, and so the field, on another thread).
One cell runs at a time in a process, so one value serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

__all__ = ["CellTimeout", "cell_deadline", "check_deadline", "checked_field", "unbind_checked"]

_deadline: float | None = None  # time.monotonic() value, or None: no deadline


class CellTimeout(TimeoutError):
    """The cell ran past its time budget (checked cooperatively: between iterations, steps and field calls)."""


@contextmanager
def cell_deadline(at: float | None) -> Iterator[None]:
    global _deadline
    previous, _deadline = _deadline, at
    try:
        yield
    finally:
        _deadline = previous


def check_deadline() -> None:
    if _deadline is not None and time.monotonic() > _deadline:
        raise CellTimeout("the cell ran past its timeout_s budget")


def unbind_checked(tensor: torch.Tensor, chunk: int = 16384) -> tuple[torch.Tensor, ...]:
    """`tensor.unbind(0)`, made in chunks with a deadline check between them: the per-step views of a
    million-step solve take seconds to make, before its first step checks anything. Same views, same storage."""
    if tensor.shape[0] <= chunk:
        return tensor.unbind(0)
    views: list[torch.Tensor] = []
    for part in tensor.split(chunk):
        check_deadline()
        views.extend(part.unbind(0))
    return tuple(views)


def checked_field(func: Callable) -> Callable:
    """`func` with a deadline check before each call, in the forward and in any adjoint that calls it later.
    A plain wrapper, not a Module hook: a hook would move every call of the Module onto torch's slow call
    path (microseconds per call, which the timings would charge to the backend)."""

    def field(*args, **kwargs):
        check_deadline()
        return func(*args, **kwargs)

    return field
