"""The structure of the ODE state: one tensor or a tuple of tensors, and the check of what func returns."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["StateSpec"]


class StateSpec:
    """The structure of the ODE state: one tensor, or a tuple of tensors (flattened internally)."""

    def __init__(self, y0: torch.Tensor | Sequence[torch.Tensor]) -> None:
        self.is_tuple = not isinstance(y0, torch.Tensor)
        flat = list(y0) if self.is_tuple else [y0]
        if not flat:
            raise ValueError("y0: expected a tensor or a non-empty tuple of tensors, got an empty tuple")
        for k, y in enumerate(flat):
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"y0[{k}]: expected a torch.Tensor, got {type(y).__name__}")
            if not y.is_floating_point():
                raise TypeError(f"y0[{k}]: expected a floating-point tensor, got {y.dtype}")
        self.shapes = [y.shape for y in flat]
        self.flat = flat

    def pack(self, flat: Sequence[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return tuple(flat) if self.is_tuple else flat[0]

    def unpack(self, value: object, what: str) -> list[torch.Tensor]:
        """Flatten func's output and check it against the state's structure (torchsde-style contract)."""
        if self.is_tuple:
            if not isinstance(value, (tuple, list)) or len(value) != len(self.shapes):
                raise ValueError(
                    f"{what}: the state is a tuple of {len(self.shapes)} tensors, so func must return a tuple "
                    f"of {len(self.shapes)} tensors; got {type(value).__name__}"
                    + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
                )
            flat = list(value)
        else:
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{what}: func must return a tensor like y0, got {type(value).__name__}")
            flat = [value]
        for k, (v, shape) in enumerate(zip(flat, self.shapes)):
            if not isinstance(v, torch.Tensor) or v.shape != shape:
                got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"{what}: component {k} must have the state's shape {tuple(shape)}, got {got}")
        return flat
