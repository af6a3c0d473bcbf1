"""Executors: where cells run. `inprocess` (the default: one process, suite/executors/inprocess.py), `local`
(one process per cell on this machine) and `slurm` (one job per cell on a cluster), the last two through
submitit (suite/executors/coordinator.py). Only the CLI imports them; they build on suite/cell.py."""

from suite.executors.config import (
    EXECUTOR_KINDS,
    ExecutorConfig,
    ExecutorConfigError,
    ExecutorKind,
    load_executor_config,
)

__all__ = ["EXECUTOR_KINDS", "ExecutorKind", "ExecutorConfig", "ExecutorConfigError", "load_executor_config"]

