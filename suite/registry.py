"""A tiny name → object registry shared by every axis (task, backend, precision, scaling, method), and the
one plug-in loader.

Each axis owns one `Registry`; adding a member never touches another axis. Unknown names raise a
`ValueError` that lists the valid names, so a typo in a spec or on the command line is self-explaining.

Plug-ins, as pytest and asv find theirs: an installed distribution declares entry points in the group of a
registry (`ctbench.tasks`, `ctbench.backends`); `load_plugins` loads each once per process and registers it
under the entry point's name. A module that is not packaged is named in `CTBENCH_PLUGINS` (comma-separated)
and registers its members itself on import. The CLI and every job's worker call `load_plugins`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import types
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "UnknownNameError", "PluginError", "load_plugins", "plugin_modules_from_env",
           "PLUGINS_ENV"]

PLUGINS_ENV = "CTBENCH_PLUGINS"


class UnknownNameError(ValueError):
    """A name that is not registered on an axis."""


class PluginError(RuntimeError):
    """A plug-in that cannot be loaded or registered: the message names its entry point or module."""


_PLUGGABLE: dict[str, Registry] = {}  # entry-point group → the registry its members join


class Registry(Generic[T]):
    """Maps names to members of one axis, in registration order.

    `entry_point_group`: installed plug-ins declare members of this axis under that entry-point group.
    """

    def __init__(self, axis: str, entry_point_group: str | None = None) -> None:
        self.axis = axis
        self._items: dict[str, T] = {}
        self.entry_point_group = entry_point_group
        self.from_entry_points: dict[str, str] = {}  # name → "group: name = value (distribution version)"
        if entry_point_group is not None:
            _PLUGGABLE[entry_point_group] = self

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


def plugin_modules_from_env() -> list[str]:
    """The modules CTBENCH_PLUGINS names (jobs inherit the variable, and their workers load the same)."""
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


_loaded: set[str] = set()  # entry points and modules already loaded by this process


def _entry_point_label(ep: importlib.metadata.EntryPoint) -> str:
    dist = f" ({ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
    return f"{ep.group}: {ep.name} = {ep.value}{dist}"


def _register_entry_point(registry: Registry, ep: importlib.metadata.EntryPoint) -> None:
    label = _entry_point_label(ep)
    try:
        member = ep.load()
    except Exception as exc:  # noqa: BLE001 — any failure of foreign code is reported with its origin
        raise PluginError(f"plug-in {label} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if isinstance(member, types.ModuleType):  # a module that registers its members on import
        return
    if inspect.isclass(member):
        member = member()  # tasks and backends are stateless: one instance serves every cell
    if ep.name in registry:
        raise PluginError(f"plug-in {label}: {registry.axis} {ep.name!r} is already registered "
                          f"(by {registry.from_entry_points.get(ep.name, 'ctbench or an earlier plug-in')})")
    if getattr(member, "name", None) != ep.name:
        member.name = ep.name  # the entry point's name is the one specs and records use
    registry.add(ep.name, member)
    registry.from_entry_points[ep.name] = label


def load_plugins() -> None:
    """Load every installed plug-in of every registry that takes them, then the CTBENCH_PLUGINS modules,
    each once per process (a later call loads only what is new, e.g. after CTBENCH_PLUGINS changed).

    Call it after the registries exist (importing suite.tasks and suite.backends creates them)."""
    for group, registry in _PLUGGABLE.items():
        for ep in importlib.metadata.entry_points(group=group):
            key = f"entry point {ep.group}:{ep.name}"
            if key not in _loaded:
                _loaded.add(key)
                _register_entry_point(registry, ep)
    for module in plugin_modules_from_env():
        key = f"module {module}"
        if key in _loaded:
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 — a broken or missing module is named, with its error
            raise PluginError(f"{PLUGINS_ENV} names {module!r}, which cannot be imported: "
                              f"{type(exc).__name__}: {exc}") from exc
        _loaded.add(key)
