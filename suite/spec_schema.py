"""The spec file's schema: what keys a TOML spec may have and what each may hold (pydantic models), checked
key by key against the registries. Loading, the checks that need a task's own schema, and matrix expansion
are `suite/spec.py`'s."""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from suite.backends import BACKENDS
from suite.engine import parse_memory
from suite.precision import PRECISIONS
from suite.scaling import SCALINGS, OnOverflow
from suite.strict import StrictModel
from suite.tasks import TASKS

__all__ = ["SolverSpec", "MatrixSpec", "ProfileSpec", "SpecFile", "known_methods", "validate_strictly",
           "DateInSpec", "NAME_PATTERN", "NAME_RULE"]

# Variant and profile names become parts of cell ids, run ids and file names: one safe path component.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
NAME_RULE = "letters, digits, '_', '.', '+' and '-', starting with a letter or digit, at most 64 characters"


def known_methods() -> list[str]:
    """Every method some backend declares (ODE tableaux and SDE schemes)."""
    return sorted(set().union(*(b.caps.methods | b.caps.sde_methods for _, b in BACKENDS.items())))


def _check_unique(values: list | None, axis: str) -> list | None:
    """A repeated axis value would run (and record) the same cells twice."""
    if values is None:
        return values
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{axis} lists {', '.join(repr(v) for v in repeated)} more than once; each value once")
    return values


def _check_safe_names(names, what: str):
    for name in names:
        if not NAME_PATTERN.match(name):
            raise ValueError(f"{what} name {name!r} is not allowed: use {NAME_RULE}")
    return names


def _check_names(values: list[str], registry, axis: str) -> list[str]:
    for v in values:
        if v not in registry:
            raise ValueError(f"unknown {axis} {v!r}; allowed: {', '.join(sorted(registry.names()))}")
    return values


def _check_memory(values: list[str]) -> list[str]:
    """Each a memory setting the engine knows, written canonically ('checkpoint:08' is 'checkpoint:8')."""
    return [str(parse_memory(v)) for v in values]


def _check_methods(values: list[str]) -> list[str]:
    allowed = known_methods()
    for v in values:
        if v not in allowed:
            raise ValueError(f"unknown method {v!r}; allowed: {', '.join(allowed)}")
    return values


class SolverSpec(StrictModel):
    method: str
    steps: int = Field(gt=0)
    on_overflow: OnOverflow = Field(
        OnOverflow.FAIL, description="training cells: a non-finite gradient ends the cell (fail) or skips that "
        "optimizer step and counts it (skip, as GradScaler does)")
    memory: str = Field("states", description="what the engine keeps for the backward: states, stages, "
                        "checkpoint or checkpoint:K (other backends run only states, their own way)")

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _check_methods([v])[0]

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        return _check_memory([v])[0]


class MatrixSpec(StrictModel):
    variant: list[str] = Field(min_length=1)
    backend: list[str] = Field(min_length=1)
    precision: list[str] = Field(min_length=1)
    scaling: list[str] = Field(min_length=1)
    seed: list[int] = Field(default_factory=lambda: [0], min_length=1)
    method: list[str] | None = Field(None, min_length=1, description="default: [solver.method]")
    steps: list[int] | None = Field(None, min_length=1, description="default: [solver.steps]")
    memory: list[str] | None = Field(None, min_length=1, description="default: [solver.memory]")
    exclude: list[dict[str, str | int | list[str] | list[int]]] = Field(default_factory=list)

    @field_validator("variant", "backend", "precision", "scaling", "seed", "method", "steps", "memory")
    @classmethod
    def _unique(cls, v, info):
        return _check_unique(v, f"matrix.{info.field_name}")

    @field_validator("memory")
    @classmethod
    def _memories(cls, v):
        return v if v is None else _check_memory(v)

    @field_validator("method")
    @classmethod
    def _methods(cls, v):
        return v if v is None else _check_methods(v)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v):
        if v is not None and any(n < 1 for n in v):
            raise ValueError(f"steps must be positive integers, got {v}")
        return v

    @field_validator("backend")
    @classmethod
    def _backend(cls, v):
        return _check_names(v, BACKENDS, "backend")

    @field_validator("precision")
    @classmethod
    def _precision(cls, v):
        return _check_names(v, PRECISIONS, "precision")

    @field_validator("scaling")
    @classmethod
    def _scaling(cls, v):
        return _check_names(v, SCALINGS, "scaling")


class ProfileSpec(StrictModel):
    description: str = ""
    device: Literal["cpu", "cuda"] = "cpu"
    timeout_s: float | None = Field(None, gt=0)
    seed: list[int] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    exclude: list[dict[str, str | int | list[str] | list[int]]] = Field(
        default_factory=list, description="extra exclusions for this profile (which cells run, not what they do)")

    @field_validator("seed")
    @classmethod
    def _unique_seeds(cls, v):
        return _check_unique(v, "seed")


class SpecFile(StrictModel):
    task: str
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = Field(min_length=1)
    solver: SolverSpec
    matrix: MatrixSpec
    profiles: dict[str, ProfileSpec]
    gate: dict[str, float] = Field(default_factory=dict,
                                   description="metric → tolerance for `ctbench gate` (overrides the task's rule)")

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        return _check_names([v], TASKS, "task")[0]

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v):
        _check_safe_names(v, "variant")
        return v

    @field_validator("profiles")
    @classmethod
    def _profile_names(cls, v):
        _check_safe_names(v, "profile")
        return v


def validate_strictly(model: type[BaseModel], data: dict) -> BaseModel:
    """Validate TOML data strictly: a string is never a number or a boolean, a float never an integer.

    Through JSON because pydantic's strict JSON mode is the one that still takes TOML arrays for tuples and
    integers for floats, which are not coercions a user would be surprised by.
    """
    return model.model_validate_json(json.dumps(data, default=_not_json), strict=True)


def _not_json(value: Any) -> Any:
    if isinstance(value, (_dt.date, _dt.time, _dt.datetime)):
        raise DateInSpec(value)
    raise TypeError(f"{type(value).__name__} is not a spec value")


class DateInSpec(TypeError):
    """A TOML date or time where a spec value belongs (JSON, and so the schema, has none)."""

    def __init__(self, value) -> None:
        super().__init__(f"TOML date/time {value.isoformat()} is not a valid spec value (write numbers, strings, "
                         "booleans, arrays and tables)")


