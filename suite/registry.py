"""A tiny name → object registry shared by every axis (task, backend, precision, scaling, method).

Each axis owns one `Registry`; adding a member never touches another axis. Unknown names raise a
`ValueError` that lists the valid names, so a typo in a spec or on the command line is self-explaining.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "UnknownNameError"]


class UnknownNameError(ValueError):
    """A name that is not registered on an axis."""


class Registry(Generic[T]):
    """Maps names to members of one axis, in registration order."""

    def __init__(self, axis: str) -> None:
        self.axis = axis
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.axis} {name!r} is already registered (this is a bug)")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def decorate(item: T) -> T:
            return self.add(name, item)

        return decorate

    def register_instance(self, name: str) -> Callable[[type], type]:
        """Class decorator that registers one instance of the class (backends and tasks are stateless)."""

        def decorate(cls: type) -> type:
            self.add(name, cls())
            return cls

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.axis} {name!r}; valid: {', '.join(sorted(self._items))}"
            ) from None

    def remove(self, name: str) -> T:
        """Unregister (for plug-ins and test doubles that must not outlive their scope)."""
        return self._items.pop(name)

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())
