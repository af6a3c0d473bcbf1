"""Executor settings: which engine runs the cells and how (a `--executor-config` TOML file plus CLI flags).

A lab keeps its cluster's settings in one small file; unknown keys and wrong types are errors, as in specs:

    executor = "slurm"
    checkpoint_every = 50          # training iterations between checkpoints
    timeout_grace_s = 120          # hard kill this long after a cell's timeout_s

    [slurm]
    partition = "gpu"
    gpus_per_task = 1
    max_parallel = 16
    setup = ["module load cuda/12.4", "source ~/venvs/ctbench/bin/activate"]
"""

from __future__ import annotations

import math
import tomllib
from enum import StrEnum
from pathlib import Path

from pydantic import Field, ValidationError

from suite.strict import StrictModel

__all__ = ["ExecutorConfig", "ExecutorConfigError", "SlurmUnavailable", "SlurmRejected", "LocalSettings",
           "SlurmSettings", "load_executor_config", "ExecutorKind", "EXECUTOR_KINDS"]


class ExecutorKind(StrEnum):
    """Where cells run: this process, one process per cell on this machine, one SLURM job per cell."""

    INPROCESS = "inprocess"
    LOCAL = "local"
    SLURM = "slurm"


EXECUTOR_KINDS = tuple(ExecutorKind)


class ExecutorConfigError(ValueError):
    """A bad executor setting (file or flag): the message names each key and what is allowed."""


class SlurmUnavailable(ExecutorConfigError):
    """--executor slurm on a machine without SLURM's commands."""


class SlurmRejected(ExecutorConfigError):
    """sbatch refused a submission (an unknown partition or account, a limit): the cluster's answer, named."""


class LocalSettings(StrictModel, strict=True):
    """One machine: each cell in its own process (submitit's local executor)."""

    jobs: int = Field(1, ge=1, description="cells running at once (CPU cells; CUDA cells also need a free GPU)")
    gpus: list[int] | None = Field(None, description="GPU indices to use (default: every visible GPU)")
    cells_per_gpu: int = Field(1, ge=1, description="more than 1 shares a GPU: its cells' timings are not "
                                                    "comparable, and their records say so")
    threads_per_cell: int | None = Field(None, ge=1, description="torch threads per cell (default: "
                                         "OMP_NUM_THREADS when set, else the machine's cores divided by jobs)")


class SlurmSettings(StrictModel, strict=True):
    """A SLURM cluster: one job per cell, submitted as job arrays (submitit's SlurmExecutor)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    gpus_per_task: int = Field(1, ge=1, description="GPUs per CUDA cell (CPU cells ask for none)")
    gres: str | None = Field(None, description="e.g. 'gpu:h100:1': CUDA cells ask for GPUs with --gres "
                                              "instead of --gpus-per-task (clusters that count GPUs as gres)")
    cpus_per_task: int = Field(8, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    max_parallel: int = Field(16, ge=1, description="array parallelism: cells running at once")
    time_margin_min: float = Field(5.0, ge=0, description="added to each job's time limit for start-up")
    default_time_min: float = Field(24 * 60, gt=0, description="time limit of cells without a timeout_s")
    signal_delay_s: int = Field(120, ge=0, description="SIGUSR2 this long before the time limit: the cell "
                                                       "checkpoints and is requeued")
    setup: list[str] = Field(default_factory=list, description="shell lines run before each job (modules, venv)")
    additional: dict[str, str | int | bool] = Field(default_factory=dict, description="extra #SBATCH options")
    job_name: str = "ctbench"


class ExecutorConfig(StrictModel, strict=True):
    # the one field a file or flag gives as text: its enum takes the value's string (strict mode would not)
    executor: ExecutorKind = Field(ExecutorKind.INPROCESS, strict=False)
    checkpoint_every: int = Field(25, ge=0, description="training iterations between checkpoints (0: only "
                                                        "when a job is asked to stop)")
    timeout_grace_s: float = Field(60.0, ge=0, description="a cell still running this long after its "
                                                           "timeout_s is killed (covers process start-up)")
    local: LocalSettings = Field(default_factory=LocalSettings)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    def hard_limit_s(self, timeout_s: float | None) -> float | None:
        """When a cell's process is killed: its cooperative budget plus the grace (None: no budget)."""
        return None if timeout_s is None else timeout_s + self.timeout_grace_s

    def slurm_time_min(self, timeout_s: float | None) -> int:
        """A job's SLURM time limit in whole minutes, derived from the profile's timeout_s."""
        if timeout_s is None:
            return math.ceil(self.slurm.default_time_min)
        return math.ceil((timeout_s + self.timeout_grace_s) / 60 + self.slurm.time_margin_min)


def load_executor_config(path: Path | None, overrides: dict) -> ExecutorConfig:
    """Read the TOML file (if any) and apply CLI overrides (`None` values are not given)."""
    data: dict = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ExecutorConfigError(f"cannot read --executor-config {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ExecutorConfigError(f"--executor-config {path} is not valid TOML: {exc}") from None
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        target = data.setdefault(section, {}) if section else data
        if not isinstance(target, dict):
            raise ExecutorConfigError(f"--executor-config {path}: '{section}' must be a table")
        target[name] = value
    try:
        return ExecutorConfig.model_validate(data)
    except ValidationError as exc:
        where = f"--executor-config {path}" if path else "executor options"
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<top level>'}: {err['msg']}"
                             for err in exc.errors())
        raise ExecutorConfigError(f"{where}: {problems}") from None
