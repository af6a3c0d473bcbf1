"""BSDS300 patches (d = 63): the real MAF file when a user has it, otherwise an offline proxy.

Real data: the MAF release's BSDS300.hdf5 (datasets train / validation / test, 63 columns), read with
h5py from a path given in the spec (`data_path`) or the environment variable CTBENCH_BSDS300.

Proxy (`bsds300-proxy`): natural photographs that ship inside pip packages (scikit-image's data images
and scikit-learn's sample images) through the same preprocessing as BSDS300: grey, 8×8 patches,
dequantize with U[0, 1), divide by 256, subtract the patch mean, drop the last (bottom-right) pixel.
Train / validation / test are split *by image*, so no photograph is in two splits. Built once,
deterministically, and cached (CTBENCH_CACHE, default ~/.cache/ctbench). A proxy number is never BSDS300:
every record names the data set it used.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from suite.data._common import cache_dir, file_fingerprint, resolve_source

__all__ = ["PatchData", "load_bsds300", "build_proxy", "PROXY_SPLITS", "ENV_PATH", "cache_dir", "identify_bsds300",
           "file_fingerprint"]

ENV_PATH = "CTBENCH_BSDS300"
PATCH = 8
PROXY_SPLITS = {
    "train": ["skimage:astronaut", "skimage:brick", "skimage:camera", "skimage:chelsea", "skimage:coins",
              "skimage:grass", "skimage:gravel", "skimage:moon", "skimage:hubble_deep_field", "sklearn:china.jpg"],
    "validation": ["skimage:rocket", "skimage:clock"],
    "test": ["skimage:coffee", "sklearn:flower.jpg"],
}
PROXY_VERSION = 1


@dataclass(frozen=True)
class PatchData:
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    name: str  # "BSDS300" or "bsds300-proxy"
    provenance: str

    @property
    def dim(self) -> int:
        return self.train.shape[1]


def _grey_uint8(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        rgb = image[..., :3].astype(np.float64)
        image = rgb @ np.array([0.2125, 0.7154, 0.0721])  # ITU-R BT.709 luma, as skimage.color.rgb2gray
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _load_image(ref: str) -> np.ndarray:
    package, name = ref.split(":", 1)
    if package == "skimage":
        import skimage.data

        return _grey_uint8(getattr(skimage.data, name)())
    if package == "sklearn":
        from sklearn.datasets import load_sample_image

        return _grey_uint8(load_sample_image(name))
    raise ValueError(f"unknown image source {ref!r} (this is a bug)")


def _patches(grey: np.ndarray, stride: int, rng: np.random.Generator) -> np.ndarray:
    """All 8×8 patches at `stride`, preprocessed like BSDS300: (n, 63) float32."""
    windows = np.lib.stride_tricks.sliding_window_view(grey, (PATCH, PATCH))[::stride, ::stride]
    flat = windows.reshape(-1, PATCH * PATCH).astype(np.float64)
    flat = (flat + rng.random(flat.shape)) / 256.0
    flat -= flat.mean(axis=1, keepdims=True)
    return flat[:, :-1].astype(np.float32)


def _proxy_key(stride: int, seed: int) -> str:
    return hashlib.sha256(json.dumps([PROXY_VERSION, PROXY_SPLITS, stride, seed]).encode()).hexdigest()[:12]


def _load_cached(path: Path) -> dict[str, np.ndarray] | None:
    """The cached splits, or None (with a warning naming the file) when the cache file is damaged."""
    try:
        with np.load(path) as f:
            splits = {name: np.asarray(f[name]) for name in PROXY_SPLITS}
        if all(a.ndim == 2 and a.shape[1] == PATCH * PATCH - 1 and a.dtype == np.float32 for a in splits.values()):
            return splits
        why = "its arrays have the wrong shape or type"
    except Exception as exc:  # noqa: BLE001 — any failure to read a cache file means: rebuild it
        why = f"{type(exc).__name__}: {exc}"
    warnings.warn(f"proxy cache {path} is corrupt ({why}); it will be rebuilt", stacklevel=3)
    return None


def build_proxy(stride: int = 4, seed: int = 0, root: Path | None = None) -> PatchData:
    """Build (or load from the cache) the proxy; deterministic for a given (stride, seed)."""
    path = (root or cache_dir()) / f"bsds300-proxy-{_proxy_key(stride, seed)}.npz"
    provenance = (f"bsds300-proxy v{PROXY_VERSION}: images {PROXY_SPLITS}, 8x8 patches at stride {stride}, "
                  f"dequantization seed {seed}, split by image")
    if path.exists():
        cached = _load_cached(path)
        if cached is not None:
            return PatchData(cached["train"], cached["validation"], cached["test"], "bsds300-proxy", provenance)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, refs in PROXY_SPLITS.items():
        splits[split] = np.concatenate([_patches(_load_image(ref), stride, rng) for ref in refs])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    with open(tmp, "wb") as fh:
        np.savez(fh, **splits)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # atomic: a killed build never leaves a half-written cache
    return PatchData(splits["train"], splits["validation"], splits["test"], "bsds300-proxy", provenance)


def _read_real(path: Path) -> PatchData:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from None
    with handle as f:
        splits = {}
        for split in ("train", "validation", "test"):
            if split not in f:
                raise ValueError(f"{path}: no dataset {split!r}; a BSDS300.hdf5 (MAF release) has train, "
                                 f"validation and test; this file has: {', '.join(sorted(f.keys()))}")
            data = np.asarray(f[split], dtype=np.float32)
            if data.ndim != 2 or data.shape[1] != 63:
                raise ValueError(f"{path}: {split} has shape {data.shape}; BSDS300 patches have 63 columns")
            splits[split] = data
    return PatchData(splits["train"], splits["validation"], splits["test"], "BSDS300", f"real BSDS300 from {path}")


def _resolve(source: str, path: str | None) -> str | None:
    return resolve_source(source, path, ENV_PATH)


def identify_bsds300(source: str = "auto", path: str | None = None, proxy_stride: int = 4, seed: int = 0
                     ) -> dict[str, str]:
    """Which data `load_bsds300` with these arguments would return, without loading it."""
    real = _resolve(source, path)
    if real is None:
        return {"dataset": "bsds300-proxy", "dataset_fingerprint": f"proxy key {_proxy_key(proxy_stride, seed)}"}
    if not real:
        return {"dataset": "BSDS300", "dataset_fingerprint": "no file given"}
    try:
        fingerprint = file_fingerprint(Path(real))
    except OSError as exc:
        fingerprint = f"unreadable: {exc.strerror or exc}"
    return {"dataset": "BSDS300", "dataset_fingerprint": fingerprint}


def load_bsds300(source: str = "auto", path: str | None = None, proxy_stride: int = 4, seed: int = 0) -> PatchData:
    """source: 'real' (the MAF file; error if missing), 'proxy', or 'auto' (real if a path is known)."""
    resolved = _resolve(source, path)
    if resolved is None:
        return build_proxy(proxy_stride, seed)
    path = resolved
    if not path:
        raise FileNotFoundError(
            f"real BSDS300 requested but no file given: set data_path in the spec or {ENV_PATH}=/path/to/BSDS300.hdf5 "
            "(the MAF release; it cannot be downloaded here), or use data_source = 'proxy'"
        )
    real = Path(path)
    if not real.is_file():
        raise FileNotFoundError(f"BSDS300 file {real} does not exist (from data_path or {ENV_PATH})")
    return _read_real(real)
