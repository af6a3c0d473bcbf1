"""Executors: where cells run. `inprocess` (the default: one process, suite/executors/inprocess.py), `local`
(one process per cell on this machine) and `slurm` (one job per cell on a cluster), the last two through
submitit (suite/executors/coordinator.py). Only the CLI imports them; they build on suite/cell.py."""

import importlib
import os

from suite.executors.config import EXECUTOR_KINDS, ExecutorConfig, ExecutorConfigError, load_executor_config

__all__ = ["EXECUTOR_KINDS", "ExecutorConfig", "ExecutorConfigError", "load_executor_config", "import_plugins"]


def import_plugins() -> None:
    """Register plug-in tasks and backends: CTBENCH_PLUGINS names modules (comma-separated) that register
    them on import. Jobs inherit the variable, so their workers find the same plug-ins."""
    for module in filter(None, os.environ.get("CTBENCH_PLUGINS", "").split(",")):
        importlib.import_module(module.strip())
