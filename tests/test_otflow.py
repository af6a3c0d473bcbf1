"""otflow-bsds300: closed-form potential derivatives, BSDS300 loading and proxy, smoke cells."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from suite.cell import run_cell
from suite.data import bsds300
from suite.models.otflow_potential import OTFlowPotential
from suite.spec import Cell
from suite.tasks.otflow import OTFlowParams


@pytest.mark.parametrize(("n_layers", "width", "d"), [(2, 7, 5), (3, 11, 4), (5, 6, 3)])
def test_closed_form_gradient_and_laplacian_equal_autograd(n_layers, width, d):
    torch.manual_seed(n_layers)
    phi = OTFlowPotential(d, width, n_layers, rank=3).double()
    with torch.no_grad():
        for p in phi.parameters():
            p.add_(0.3 * torch.randn_like(p))  # off the initialisation (w = 1, c = 0)
    s = torch.randn(6, d + 1, dtype=torch.float64, requires_grad=True)
    grad_auto = torch.autograd.grad(phi(s).sum(), s, create_graph=True)[0]
    lap_auto = sum(torch.autograd.grad(grad_auto[:, i].sum(), s, retain_graph=True)[0][:, i] for i in range(d))
    grad, lap = phi.grad_and_laplacian(s)
    torch.testing.assert_close(grad, grad_auto, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lap, lap_auto, rtol=1e-12, atol=1e-12)


def test_potential_rejects_a_resnet_without_layers():
    with pytest.raises(ValueError, match="n_layers"):
        OTFlowPotential(3, 4, n_layers=1)


def test_proxy_is_deterministic_cached_and_split_by_image(tmp_path, monkeypatch):
    a = bsds300.build_proxy(stride=32, seed=0, root=tmp_path)
    files = list(tmp_path.glob("bsds300-proxy-*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(bsds300, "_load_image", lambda ref: pytest.fail("the cache was not used"))
    b = bsds300.build_proxy(stride=32, seed=0, root=tmp_path)
    for split in ("train", "validation", "test"):
        assert np.array_equal(getattr(a, split), getattr(b, split))
        assert getattr(a, split).shape[1] == 63
    assert a.name == "bsds300-proxy" and "split by image" in a.provenance
    images = [ref for refs in bsds300.PROXY_SPLITS.values() for ref in refs]
    assert len(images) == len(set(images))  # no photograph in two splits
    # BSDS300 preprocessing: patch means were subtracted before the last pixel was dropped
    assert abs(float(a.train.mean())) < 1e-3


def test_real_bsds300_loader_reads_a_small_file(tmp_path, monkeypatch):
    path = tmp_path / "BSDS300.hdf5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for split, n in (("train", 50), ("validation", 10), ("test", 20)):
            f.create_dataset(split, data=rng.standard_normal((n, 63)).astype(np.float32))
    data = bsds300.load_bsds300("real", str(path))
    assert data.name == "BSDS300" and data.train.shape == (50, 63) and data.test.shape == (20, 63)
    monkeypatch.setenv(bsds300.ENV_PATH, str(path))
    assert bsds300.load_bsds300("auto").name == "BSDS300"


def test_bad_or_missing_real_files_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(bsds300.ENV_PATH, raising=False)
    with pytest.raises(FileNotFoundError, match="set data_path in the spec or CTBENCH_BSDS300"):
        bsds300.load_bsds300("real")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bsds300.load_bsds300("real", str(tmp_path / "nope.hdf5"))
    wrong = tmp_path / "wrong.hdf5"
    with h5py.File(wrong, "w") as f:
        f.create_dataset("train", data=np.zeros((3, 63)))
    with pytest.raises(ValueError, match="no dataset 'validation'; .* this file has: train"):
        bsds300.load_bsds300("real", str(wrong))
    with h5py.File(wrong, "w") as f:
        for split in ("train", "validation", "test"):
            f.create_dataset(split, data=np.zeros((3, 10)))
    with pytest.raises(ValueError, match=r"train has shape \(3, 10\); BSDS300 patches have 63 columns"):
        bsds300.load_bsds300("real", str(wrong))
    (tmp_path / "text.hdf5").write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        bsds300.load_bsds300("real", str(tmp_path / "text.hdf5"))


SMALL = OTFlowParams(data_source="proxy", proxy_stride=32, width=8, iterations=2, batch=16, val_batch=32,
                     val_every=1, mmd_samples=16)


def _cell(backend, precision="fp32", scaling="none"):
    return Cell(task="otflow-bsds300", variant="paper", backend=backend, method="rk4", steps=4,
                precision=precision, scaling=scaling, seed=0, profile="smoke", device="cpu", params=SMALL,
                spec_hash="t")


@pytest.fixture
def small_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CTBENCH_CACHE", str(tmp_path))


@pytest.mark.parametrize("backend", ["engine", "torchdiffeq"])
def test_smoke_cells_give_finite_nll_at_fp32(backend, small_cache):
    out = run_cell(_cell(backend))
    assert out["status"] == "ok", out["reason"]
    for name in ("val_nll", "val_transport", "val_hjb", "mmd", "fwd_s", "bwd_s", "iter_s", "total_s", "iters_done"):
        assert np.isfinite(out["metrics"][name])
    assert out["extra"]["dataset"] == "bsds300-proxy"


def test_fp16_without_scaling_is_recorded_not_crashed(small_cache):
    out = run_cell(_cell("engine", "fp16", "none"))
    assert out["status"] in ("ok", "nonfinite"), out["reason"]
