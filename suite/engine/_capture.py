"""The tensors a vector field captures, found and substituted while it runs: TorchFunctionModes that see every
tensor reaching a torch operation (suite/engine/_field.py explains why the engine needs them), and the small
tree helpers they share with it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["Capture", "Substitute", "substituted", "graph_leaves", "unique", "replace_tensors", "tensors_in",
           "keep", "is_dtype_error", "flat", "leaf_like", "detach"]


def keep(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def is_dtype_error(exc: RuntimeError) -> bool:
    text = str(exc)
    return any(k in text for k in ("dtype", "scalar type", "Half", "BFloat16", "same type", "expected both"))


def flat(value) -> list:
    return list(value) if isinstance(value, (tuple, list)) else [value]


def leaf_like(y):
    if isinstance(y, (tuple, list)):
        return tuple(c.detach().requires_grad_(True) for c in y)
    return y.detach().requires_grad_(True)


def detach(value):
    if isinstance(value, (tuple, list)):
        return type(value)(v.detach() if isinstance(v, torch.Tensor) else v for v in value)
    return value.detach() if isinstance(value, torch.Tensor) else value


def graph_leaves(outputs: list, stops: set[int] = frozenset()) -> Iterator[torch.Tensor]:
    """Every leaf tensor requiring grad that the outputs' autograd graph reaches, not walking past the
    nodes in `stops` (those of captured non-leaf tensors: their history is the caller's)."""
    seen: set[int] = set(stops)
    stack = [o.grad_fn for o in outputs if isinstance(o, torch.Tensor) and o.grad_fn is not None]
    found: dict[int, torch.Tensor] = {}
    for o in outputs:
        if isinstance(o, torch.Tensor) and o.requires_grad and o.grad_fn is None:
            found[id(o)] = o
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            found[id(variable)] = variable
        stack.extend(next_node for next_node, _ in node.next_functions)
    return iter(found.values())


def unique(tensors) -> list[torch.Tensor]:
    """Tensors in order, each once (by identity)."""
    seen: set[int] = set()
    return [x for x in tensors if not (id(x) in seen or seen.add(id(x)))]


def replace_tensors(value, lookup: Callable):
    """`value` with every tensor in it (through tuples, lists and dicts) passed through `lookup`."""
    if isinstance(value, torch.Tensor):
        return lookup(value)
    if isinstance(value, (tuple, list)):
        return type(value)(replace_tensors(v, lookup) for v in value)
    if isinstance(value, dict):
        return {k: replace_tensors(v, lookup) for k, v in value.items()}
    return value


def tensors_in(value) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from tensors_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors_in(v)


class Capture(TorchFunctionMode):
    """Sees every tensor that reaches a torch operation during one call: those the call neither received
    nor created are its captures (`found`); `copy_for(tensor)` may give a replacement (`copies`)."""

    def __init__(self, inputs: list, copy_for: Callable[[torch.Tensor], torch.Tensor | None]) -> None:
        super().__init__()
        self.known = {id(x) for x in inputs if isinstance(x, torch.Tensor)}
        self.created: dict[int, torch.Tensor] = {}  # kept alive, so their ids stay theirs during the call
        self.found: dict[int, torch.Tensor] = {}
        self.copies: dict[int, torch.Tensor] = {}
        self.copy_for = copy_for

    def _lookup(self, x: torch.Tensor) -> torch.Tensor:
        key = id(x)
        if key in self.copies:
            return self.copies[key]
        if key in self.known or key in self.created:
            return x
        if key not in self.found:
            self.found[key] = x
            copy = self.copy_for(x)
            if copy is not None:
                self.copies[key] = copy
                self.created[id(copy)] = copy
                return copy
        return x

    def __torch_function__(self, func, types, args=(), kwargs=None):
        args = replace_tensors(args, self._lookup)
        kwargs = replace_tensors(kwargs or {}, self._lookup)
        out = func(*args, **kwargs)
        for x in tensors_in(out):
            self.created[id(x)] = x
        return out


class Substitute(TorchFunctionMode):
    """Replaces given tensors (by identity) in the arguments of every torch operation of a call."""

    def __init__(self, mapping: dict[int, torch.Tensor]) -> None:
        super().__init__()
        self.mapping = mapping

    def _lookup(self, x: torch.Tensor) -> torch.Tensor:
        return self.mapping.get(id(x), x)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*replace_tensors(args, self._lookup), **replace_tensors(kwargs or {}, self._lookup))


def substituted(call: Callable, mapping: dict[int, torch.Tensor]) -> Callable:
    mode = Substitute(mapping)

    def run(t, y):
        with mode:
            return call(t, y)
    return run
