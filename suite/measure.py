"""Timers, peak memory and environment capture, done the same way for every cell."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

__all__ = ["synchronize", "Stopwatch", "PeakMemory", "capture_env", "git_state", "device_name", "device_class",
           "torch_build"]


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work so wall-clock timings measure the work, not its launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Collects synchronized wall-time samples under named keys: `with watch("fwd_s"): ...`."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.samples: dict[str, list[float]] = {}

    def __call__(self, key: str):
        return _Lap(self, key)

    def add(self, key: str, seconds: float) -> None:
        self.samples.setdefault(key, []).append(seconds)

    def median(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.samples.items()}

    def total(self) -> dict[str, float]:
        return {k: sum(v) for k, v in self.samples.items()}


class _Lap:
    def __init__(self, watch: Stopwatch, key: str) -> None:
        self.watch, self.key = watch, key

    def __enter__(self):
        synchronize(self.watch.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.watch.device)
        self.watch.add(self.key, time.perf_counter() - self.start)
        return False


class PeakMemory:
    """Peak memory of a block. CUDA: max_memory_allocated after a reset (tensors only, not the caching
    allocator's reserve). CPU: the process's peak RSS (ru_maxrss), which never decreases, so it is an
    upper bound for the cell that includes everything the process touched before it."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        return False

    def read(self) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return {
                "peak_bytes": int(torch.cuda.max_memory_allocated(self.device)),
                "what": "torch.cuda.max_memory_allocated after reset_peak_memory_stats at cell start",
            }
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"peak_bytes": int(kib) * 1024, "what": "process peak RSS (ru_maxrss); not per cell on CPU"}


def git_state(root: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit sha, dirty flag) of the checkout holding the suite, or (None, None) outside git."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root, capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
        )
        return sha, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """The device's model name; never queries a GPU that this torch cannot use."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "unavailable (torch.cuda.is_available() is False)"
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return _cpu_name()
    return device.type


def torch_build() -> str:
    """torch version plus the CUDA it was built for ('cpu' for a CPU build)."""
    return f"{torch.__version__} (cuda {torch.version.cuda or 'none'})"


def device_class(device: torch.device | str) -> str:
    """What kind of device a cell's numbers came from: 'cpu: <model>' or 'cuda: <model>'."""
    device = torch.device(device)
    return f"{device.type}: {device_name(device)}"


def capture_env(device: torch.device | str, backend_versions: dict[str, str] | None = None) -> dict:
    """Everything a reader needs to know which machine and software produced a number."""
    device = torch.device(device)
    sha, dirty = git_state()
    env = {
        "git_sha": sha,
        "dirty": dirty,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device_name": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "allow_tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "hostname": platform.node(),
        "pid": os.getpid(),
        "backend_versions": dict(backend_versions or {}),
    }
    return env
