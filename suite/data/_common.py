"""What the data modules share: the cache folder, a cheap file fingerprint, and the rule that picks real data
or the offline proxy (one rule for loading a data set and for identifying it before a run)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["cache_dir", "file_fingerprint", "resolve_source", "SOURCES"]

SOURCES = ("auto", "real", "proxy")


def cache_dir() -> Path:
    return Path(os.environ.get("CTBENCH_CACHE", Path.home() / ".cache" / "ctbench"))


def file_fingerprint(path: Path, block: int = 1 << 20) -> str:
    """Size plus a sha256 of the first, middle and last MiB: tells two data files apart in milliseconds
    (hashing a multi-GB file in full for every resume would not), and survives a copy (no mtime)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        for start in sorted({0, max(0, size // 2 - block // 2), max(0, size - block)}):
            fh.seek(start)
            digest.update(fh.read(block))
    return f"{size} bytes, sampled sha256 {digest.hexdigest()[:16]}"


def resolve_source(source: str, path: str | None, env_var: str) -> str | None:
    """The real data's path to use ('' when real data is asked for but no path is known), or None for the
    proxy: 'proxy' always, 'auto' when neither the spec's data_path nor the environment variable names one."""
    if source not in SOURCES:
        raise ValueError(f"data source {source!r}; allowed: {', '.join(SOURCES)}")
    path = path or os.environ.get(env_var)
    if source == "proxy" or (source == "auto" and not path):
        return None
    return path or ""
