"""The precision axis: which dtype the network runs in, which the state accumulates in, which is stored.

A `Precision` is an explicit policy object; nothing in the suite reads the global autocast state to
decide it. TF32 is fp32 storage with TF32 tensor-core matmuls allowed (CUDA only; on a CPU it is fp32 and
the record says so through the captured tf32 flags).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from suite.registry import Registry

__all__ = ["Precision", "PRECISIONS", "get_precision", "tf32_mode"]


@dataclass(frozen=True)
class Precision:
    """A mixed-precision policy.

    Attributes:
        name: registry name (fp64, fp32, tf32, bf16, fp16).
        compute: dtype the vector field (the network) is evaluated in.
        storage: dtype of the stored trajectory.
        accumulate: default dtype the state and adjoint are accumulated in.
        master: dtype of the trainable parameters (master weights).
        tf32: allow TF32 matmuls/convolutions while this policy is active.
        devices: device types on which the policy means what its name says.
    """

    name: str
    compute: torch.dtype
    storage: torch.dtype
    accumulate: torch.dtype
    master: torch.dtype
    tf32: bool = False
    devices: frozenset[str] = frozenset({"cpu", "cuda"})

    @property
    def is_low(self) -> bool:
        """True for 16-bit compute dtypes (the ones that need autocast or scaling)."""
        return self.compute in (torch.float16, torch.bfloat16)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype `torch.autocast` should use for this policy, or None for full precision."""
        return self.compute if self.is_low else None


PRECISIONS: Registry[Precision] = Registry("precision")
for _p in (
    Precision("fp64", torch.float64, torch.float64, torch.float64, torch.float64),
    Precision("fp32", torch.float32, torch.float32, torch.float32, torch.float32),
    Precision("tf32", torch.float32, torch.float32, torch.float32, torch.float32, tf32=True,
              devices=frozenset({"cuda"})),
    Precision("bf16", torch.bfloat16, torch.bfloat16, torch.float32, torch.float32),
    Precision("fp16", torch.float16, torch.float16, torch.float32, torch.float32),
):
    PRECISIONS.add(_p.name, _p)


def get_precision(precision: str | Precision) -> Precision:
    return precision if isinstance(precision, Precision) else PRECISIONS.get(precision)


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """Set the TF32 switches for the block and restore the caller's values afterwards, also on error."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    cudnn = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn
