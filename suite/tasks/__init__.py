"""Benchmark tasks; importing this package registers all of them."""

from suite.tasks import cnf2d as _cnf2d  # noqa: F401  (registers)
from suite.tasks import otflow as _otflow  # noqa: F401  (registers)
from suite.tasks import sde_bias as _sde_bias  # noqa: F401  (registers)
from suite.tasks import soc as _soc  # noqa: F401  (registers)
from suite.tasks import stiff_rk4 as _stiff_rk4  # noqa: F401  (registers)
from suite.tasks import stl10 as _stl10  # noqa: F401  (registers)
from suite.tasks._base import (
    TASKS,
    AbstractTask,
    CellContext,
    CellTimeout,
    NonFiniteResult,
    TaskParams,
    get_task,
    scale_fields,
)


def gate_rules() -> dict:
    """task → how the gate compares its metrics (`AbstractTask.gate_rules`), for every registered task:
    what the CLI hands the gate, which itself never imports the tasks."""
    return {name: dict(task.gate_rules) for name, task in TASKS.items()}


__all__ = [
    "gate_rules", "TASKS", "AbstractTask", "CellContext", "CellTimeout", "NonFiniteResult", "TaskParams", "get_task",
    "scale_fields",
]
