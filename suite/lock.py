"""One writer per run directory: an advisory lock on `<run dir>/.ctbench.lock`.

Two `ctbench run` processes on one `--out` would both run every remaining cell, duplicate records and
time each other's work. The lock is `fcntl.flock` (the kernel drops it when the process exits in any way,
kill -9 included); the file also holds the holder's pid, host and start time, so a refusal can say who
holds it. Where flock is not available (some network file systems, non-POSIX systems) an exclusive
create of the lock file is used instead, and a lock left by a process that no longer runs on this host
is detected by its pid and taken over.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunLock", "RunLocked", "LOCK_NAME", "pid_alive", "process_start", "same_process_alive"]

LOCK_NAME = ".ctbench.lock"


class RunLocked(RuntimeError):
    """Another live process writes to this run directory."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (any owner)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def process_start(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (/proc/<pid>/stat field 22): with the pid, an
    identity that a later process reusing the pid does not share. None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm)": the comm may hold spaces
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None  # a zombie has ended


def same_process_alive(pid: int, start: str | None) -> bool:
    """Whether the process (pid, start time) that wrote a marker still runs on this host."""
    if not pid_alive(pid):
        return False
    now = process_start(pid)
    if start is None or now is None:
        return now is not None or not Path("/proc").is_dir()  # no start time to compare: the pid decides
    return now == start


def _holder_text(info: dict) -> str:
    if not info:
        return "another process (no holder information in the lock file)"
    return f"pid {info.get('pid')} on host {info.get('host')} (since {info.get('since')}, {info.get('command')})"


class RunLock:
    """`with RunLock(run_dir): ...` — exclusive for the duration; raises RunLocked with the holder's identity."""

    def __init__(self, run_dir: Path | str, command: str = "ctbench run") -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.command = command
        self._fd: int | None = None
        self.took_over: dict | None = None  # a stale holder's identity, when one was replaced

    def _identity(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "since": _dt.datetime.now().isoformat(timespec="seconds"), "command": self.command}

    def _read_holder(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def _is_stale(self, info: dict) -> bool:
        return info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) \
            and not pid_alive(info["pid"])

    def _write_identity(self, fd: int) -> None:
        payload = json.dumps(self._identity()).encode() + b"\n"
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        if os.write(fd, payload) != len(payload):
            raise OSError(errno.ENOSPC, "short write of the lock file")
        os.fsync(fd)

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is not None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLocked(self._refusal(self._read_holder())) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                self._acquire_exclusive_create()
                return
            previous = self._read_holder()
            if previous and previous.get("pid") != os.getpid():
                self.took_over = previous  # its process ended without cleaning up (kill -9, a crash)
            try:
                self._write_identity(fd)
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
            return
        self._acquire_exclusive_create()

    def _acquire_exclusive_create(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = self._read_holder()
                if not self._is_stale(info):
                    raise RunLocked(self._refusal(info)) from None
                self.took_over = info
                self.path.unlink(missing_ok=True)
                continue
            self._write_identity(fd)
            self._fd = fd
            self._created = True
            return
        raise RunLocked(self._refusal(self._read_holder()))

    def _refusal(self, info: dict) -> str:
        return (f"{self.path.parent} is being written by {_holder_text(info)}; two writers would run the same "
                f"cells twice and time each other. Wait for it to finish (or stop it), or choose another --out. "
                f"If no such process exists, delete {self.path}.")

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if getattr(self, "_created", False):
                self.path.unlink(missing_ok=True)
            else:
                os.ftruncate(fd, 0)  # an empty lock file: nobody holds it (the file itself may stay)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
