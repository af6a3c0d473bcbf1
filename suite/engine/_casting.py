"""Temporarily run parameters in another dtype, and always put them back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

__all__ = ["parameters_in_dtype"]


@contextlib.contextmanager
def parameters_in_dtype(tensors: Sequence[torch.Tensor], dtype: torch.dtype) -> Iterator[None]:
    """Swap the storage of floating tensors to `dtype` for the block; restore it in `finally`.

    Swapping `.data` (rather than calling `module.half()`) keeps the same Parameter objects, so
    gradients taken inside the block land on the caller's leaves, in `dtype`. The originals are
    restored on every exit path, an exception included: the reference implementation left models
    in half precision after an error, which silently poisoned every later measurement.
    """
    originals: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for tensor in tensors:
            if tensor.is_floating_point() and tensor.dtype != dtype:
                originals.append((tensor, tensor.data))
                tensor.data = tensor.data.to(dtype)
        yield
    finally:
        for tensor, data in reversed(originals):
            tensor.data = data
