"""STL-10 from the official binary release, and an offline proxy written in the same format.

Real data: `stl10_binary/{train,test}_{X,y}.bin` (the 2.7 GB unlabeled file is neither needed nor read,
and nothing is md5-checked): X is uint8, 3×96×96 per image, channel by channel, each channel column-major;
y is uint8 labels 1..10. Found through the spec's `data_path` or the environment variable CTBENCH_STL10
(either the folder holding the .bin files or its parent). Read with numpy memmaps; a truncated or mis-sized
file is an error naming the file and the size it should have.

Proxy (`stl10-proxy`): scikit-learn's bundled handwritten digits (1797 labelled 8×8 images, 10 classes),
rendered to 3×96×96 colour images (nearest upsampling, a seeded per-image ink and paper colour) and split
class by class into train and test, then *written in the STL-10 binary layout* and read back through the
same reader, so the code path a real STL-10 run takes is the one the proxy exercises. Built once,
deterministically, cached atomically (CTBENCH_CACHE). A proxy accuracy is never STL-10: every record
names the data set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from suite.data._common import cache_dir, file_fingerprint, resolve_source

__all__ = ["ImageSplits", "load_stl10", "read_stl10", "build_proxy", "identify_stl10", "write_stl10",
           "ENV_PATH", "IMAGE_BYTES", "split_validation"]

ENV_PATH = "CTBENCH_STL10"
SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
PROXY_VERSION = 1
PROXY_TEST_FRACTION = 0.4


@dataclass(frozen=True)
class ImageSplits:
    """Per split: uint8 images (n, 3, 96, 96) indexed [image, channel, row, column], int64 labels 0..9."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    name: str  # "STL-10" or "stl10-proxy"
    provenance: str


# ---------------------------------------------------------------- the binary format
def _folder(root: Path) -> Path:
    """The folder holding the .bin files: root itself or root/stl10_binary."""
    if (root / "train_X.bin").exists() or not (root / "stl10_binary").is_dir():
        return root
    return root / "stl10_binary"


def _read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    for path in (x_path, y_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (an STL-10 binary release has train_X.bin, train_y.bin, "
                                    "test_X.bin and test_y.bin)")
    x_size, y_size = x_path.stat().st_size, y_path.stat().st_size
    if y_size == 0:
        raise ValueError(f"{y_path}: empty label file")
    if x_size != y_size * IMAGE_BYTES:
        raise ValueError(
            f"{x_path}: {x_size} bytes, expected {y_size * IMAGE_BYTES} ({y_size} images of 3×96×96 uint8, one per "
            f"label in {y_path.name}); the file is truncated or not the STL-10 binary release")
    raw = np.memmap(x_path, dtype=np.uint8, mode="r", shape=(y_size, 3, SIDE, SIDE))
    images = raw.transpose(0, 1, 3, 2)  # each channel is stored column-major
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64)
    if labels.min() < 1 or labels.max() > 10:
        raise ValueError(f"{y_path}: labels must be 1..10, found {labels.min()}..{labels.max()}")
    return images, labels - 1


def read_stl10(root: Path | str, name: str = "STL-10", provenance: str | None = None) -> ImageSplits:
    """Read train and test splits of the binary release under `root` (lazily, through memmaps)."""
    folder = _folder(Path(root))
    train_x, train_y = _read_split(folder, "train")
    test_x, test_y = _read_split(folder, "test")
    return ImageSplits(train_x, train_y, test_x, test_y, name, provenance or f"STL-10 binary release in {folder}")


def write_stl10(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images (n, 3, 96, 96) uint8 and labels 0..9 in the official layout (channels column-major,
    labels 1..10)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(images.transpose(0, 1, 3, 2), dtype=np.uint8).tofile(folder / f"{split}_X.bin")
    (labels.astype(np.uint8) + 1).tofile(folder / f"{split}_y.bin")


# ---------------------------------------------------------------- the proxy
def _proxy_key(seed: int) -> str:
    return hashlib.sha256(json.dumps([PROXY_VERSION, PROXY_TEST_FRACTION, seed]).encode()).hexdigest()[:12]


def _render_digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as 3×96×96 uint8 colour images: nearest upsampling ×12, seeded ink/paper colours."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = digits.images / 16.0  # (n, 8, 8) in [0, 1]
    big = np.kron(grey, np.ones((SIDE // 8, SIDE // 8)))  # (n, 96, 96)
    rng = np.random.default_rng(seed)
    ink = rng.uniform(0.45, 1.0, size=(len(big), 3, 1, 1))
    paper = rng.uniform(0.0, 0.35, size=(len(big), 3, 1, 1))
    colour = paper + (ink - paper) * big[:, None, :, :]
    images = np.clip(np.round(colour * 255.0), 0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def _stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) indices: `fraction` of every class held out, by a seeded permutation per class."""
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_held = int(round(fraction * len(idx)))
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def split_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices carved from the train split, class-balanced, by a seeded rule."""
    return _stratified_split(labels, fraction, seed)


def build_proxy(seed: int = 0, root: Path | None = None) -> ImageSplits:
    """Build (or reuse) the proxy in the STL-10 layout and read it back through `read_stl10`."""
    key = _proxy_key(seed)
    target = (root or cache_dir()) / f"stl10-proxy-{key}"
    provenance = (f"stl10-proxy v{PROXY_VERSION}: scikit-learn digits rendered to 3x96x96, "
                  f"{PROXY_TEST_FRACTION:.0%} of each class held out as test (seed {seed}), in the STL-10 "
                  f"binary layout at {target}")
    if target.exists():
        try:
            return read_stl10(target, "stl10-proxy", provenance)
        except (OSError, ValueError) as exc:
            warnings.warn(f"proxy cache {target} is corrupt ({exc}); it will be rebuilt", stacklevel=2)
            shutil.rmtree(target, ignore_errors=True)
    images, labels = _render_digits(seed)
    train, test = _stratified_split(labels, PROXY_TEST_FRACTION, seed)
    staging = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    write_stl10(staging, "train", images[train], labels[train])
    write_stl10(staging, "test", images[test], labels[test])
    try:
        os.replace(staging, target)  # atomic: a killed build never leaves a half-written cache
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another process won the race; use its copy
    return read_stl10(target, "stl10-proxy", provenance)


# ---------------------------------------------------------------- choosing
def _resolve(source: str, path: str | None) -> str | None:
    return resolve_source(source, path, ENV_PATH)


def identify_stl10(source: str = "auto", path: str | None = None, seed: int = 0) -> dict[str, str]:
    """Which data `load_stl10` would use, without reading it (what --resume compares)."""
    real = _resolve(source, path)
    if real is None:
        return {"dataset": "stl10-proxy", "dataset_fingerprint": f"proxy key {_proxy_key(seed)}"}
    if not real:
        return {"dataset": "STL-10", "dataset_fingerprint": "no path given"}
    folder = _folder(Path(real))
    prints = []
    for name in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"):
        try:
            prints.append(f"{name}: {file_fingerprint(folder / name)}")
        except OSError as exc:
            prints.append(f"{name}: unreadable ({exc.strerror or exc})")
    return {"dataset": "STL-10", "dataset_fingerprint": "; ".join(prints)}


def load_stl10(source: str = "auto", path: str | None = None, seed: int = 0) -> ImageSplits:
    """source: 'real' (the binary release; error if missing), 'proxy', or 'auto' (real if a path is known)."""
    real = _resolve(source, path)
    if real is None:
        return build_proxy(seed)
    if not real:
        raise FileNotFoundError(
            f"real STL-10 requested but no path given: set data_path in the spec or {ENV_PATH}=/path/to/stl10_binary "
            "(the binary release; it cannot be downloaded here), or use data_source = 'proxy'")
    if not Path(real).is_dir():
        raise FileNotFoundError(f"STL-10 folder {real} does not exist (from data_path or {ENV_PATH})")
    return read_stl10(real)
