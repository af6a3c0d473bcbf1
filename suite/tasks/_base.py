"""The task axis: every task module has the same shape (Params, run, reference)."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from suite.backends import AbstractSolver
from suite.checkpoint import CheckpointPolicy
from suite.deadline import CellTimeout
from suite.precision import Precision
from suite.registry import Registry
from suite.rules import Rule
from suite.scaling import OnOverflow

__all__ = [
    "TaskParams", "AbstractTask", "TASKS", "get_task", "CellContext", "CellTimeout", "NonFiniteResult",
    "scale_fields",
]


class TaskParams(BaseModel):
    """Base for a task's parameter schema: unknown keys are errors, values are type-checked.

    Mark a field as a *scale knob* (one a profile may change) with
    `Field(..., json_schema_extra={"scale": True})`; every other field is science and fixed per variant.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


def scale_fields(params_cls: type[BaseModel]) -> set[str]:
    return {
        name for name, info in params_cls.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("scale")
    }


class NonFiniteResult(FloatingPointError):
    """The cell's numbers went inf/NaN: the *finding* of the cell, recorded as `nonfinite`."""


@dataclass
class CellContext:
    """What a task gets to run one cell."""

    solver: AbstractSolver
    precision: Precision
    scaling: str
    method: str
    steps: int
    seed: int
    device: torch.device
    deadline: float | None = None
    progress: Callable[[float], None] | None = None
    on_detail: Callable[[dict], None] | None = None  # where a training cell stands (status shows it)
    timing: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    artifact_prefix: str = "cell"
    on_overflow: OnOverflow = OnOverflow.FAIL
    artifacts: dict[str, str] = field(default_factory=dict)
    checkpoint: CheckpointPolicy | None = None  # training cells save/restore through it (suite.checkpoint)

    def artifact_path(self, name: str, suffix: str) -> Path | None:
        """Where to write an artifact (samples, a density grid) that the report draws; None without a run dir.

        The record lists it under `artifacts` by a path relative to the run directory.
        """
        if self.run_dir is None:
            return None
        relative = Path("artifacts") / f"{self.artifact_prefix}-{name}{suffix}"
        (self.run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        self.artifacts[name] = str(relative)
        return self.run_dir / relative

    def generator(self) -> torch.Generator:
        """A fresh generator seeded by the cell seed (no global RNG)."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed)
        return gen

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise CellTimeout("the cell ran past its timeout_s budget")

    def report_progress(self, fraction: float, **detail) -> None:
        """How far the cell is (0..1), and optionally where: e.g. iteration=, iterations=, validation=."""
        if self.progress is not None:
            self.progress(fraction)
        if detail and self.on_detail is not None:
            self.on_detail(detail)


class AbstractTask(abc.ABC):
    """One benchmark task. Subclasses set `name`, `Params`, `metric_names` and implement `run`."""

    name: ClassVar[str]
    Params: ClassVar[type[TaskParams]]
    metric_names: ClassVar[tuple[str, ...]]
    tuple_state: ClassVar[bool] = False
    kind: ClassVar[str] = "ode"  # "ode" or "sde": which backend capabilities the task needs
    summary: ClassVar[str] = ""
    # How `ctbench gate` compares each metric (suite/gate.py); a spec's [gate] table may change tolerances.
    gate_rules: ClassVar[dict[str, Rule]] = {}

    @abc.abstractmethod
    def run(self, params: TaskParams, ctx: CellContext) -> dict[str, float]:
        """Build, train and/or evaluate one cell; return its metrics (name → number)."""

    def reference(self, params: TaskParams) -> dict[str, float]:
        """The exact or float64 answer the metrics are measured against (empty if none)."""
        return {}

    def input_identity(self, params: TaskParams) -> dict[str, str]:
        """Which data a cell with these params would read, decided *without* reading it: `dataset` (the name
        every record and table row carries) and `dataset_fingerprint`. `--resume` compares it with what a
        recorded cell used, so a proxy row and a real-data row never mix silently. Empty for tasks whose
        inputs are generated from the seed and the params alone (already covered by the spec hash)."""
        return {}


TASKS: Registry[AbstractTask] = Registry("task", entry_point_group="ctbench.tasks")


def get_task(name: str) -> AbstractTask:
    return TASKS.get(name)
