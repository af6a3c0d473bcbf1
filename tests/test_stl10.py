"""stl10: the binary reader, the proxy, the model's algebra, the engine on its ODE block, and smoke cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import unrolled_rk

from suite.cell import run_cell
from suite.data import stl10 as stl
from suite.data.augment import augment, resize
from suite.engine import odeint
from suite.models.parabolic_cnn import ParabolicBlock, ParabolicCNN, parameter_count
from suite.spec import expand, load_spec, spec_files


def _pattern_images(n: int) -> np.ndarray:
    """Images whose pixel value encodes (image, channel, row, column), so any transposition shows."""
    img = np.zeros((n, 3, 96, 96), dtype=np.uint8)
    rows, cols = np.meshgrid(np.arange(96), np.arange(96), indexing="ij")
    for i in range(n):
        for c in range(3):
            img[i, c] = (rows * 2 + cols + 40 * c + 7 * i) % 251
    return img


def test_reader_round_trips_the_official_layout(tmp_path):
    images, labels = _pattern_images(5), np.array([0, 9, 3, 3, 1])
    folder = tmp_path / "stl10_binary"
    stl.write_stl10(folder, "train", images, labels)
    stl.write_stl10(folder, "test", images[:2], labels[:2])
    # the layout on disk: channel by channel, each channel column-major, labels 1..10
    raw = np.fromfile(folder / "train_X.bin", dtype=np.uint8)
    assert raw[1] == images[0, 0, 1, 0] and raw[96] == images[0, 0, 0, 1] and raw[96 * 96] == images[0, 1, 0, 0]
    assert list(np.fromfile(folder / "train_y.bin", dtype=np.uint8)) == [1, 10, 4, 4, 2]
    data = stl.read_stl10(tmp_path)  # the parent of stl10_binary works too
    np.testing.assert_array_equal(data.train_x, images)
    np.testing.assert_array_equal(data.train_y, labels)
    assert data.test_x.shape == (2, 3, 96, 96) and data.name == "STL-10"


def test_a_truncated_file_is_an_error_naming_the_file_and_the_size(tmp_path):
    stl.write_stl10(tmp_path, "train", _pattern_images(3), np.array([0, 1, 2]))
    stl.write_stl10(tmp_path, "test", _pattern_images(1), np.array([0]))
    path = tmp_path / "train_X.bin"
    whole = path.read_bytes()
    path.write_bytes(whole[:-100])
    with pytest.raises(ValueError, match=r"train_X.bin: 82844 bytes, expected 82944 \(3 images of 3×96×96"):
        stl.read_stl10(tmp_path)
    path.write_bytes(whole)
    (tmp_path / "test_y.bin").unlink()
    with pytest.raises(FileNotFoundError, match="test_y.bin: missing"):
        stl.read_stl10(tmp_path)


def test_the_proxy_is_deterministic_cached_balanced_and_split_by_class(tmp_path):
    first = stl.build_proxy(seed=0, root=tmp_path)
    (folder,) = tmp_path.glob("stl10-proxy-*")
    assert (folder / "train_X.bin").stat().st_size == len(first.train_y) * stl.IMAGE_BYTES
    second = stl.build_proxy(seed=0, root=tmp_path)  # from the cache, through the same reader
    np.testing.assert_array_equal(first.train_x, second.train_x)
    assert first.name == "stl10-proxy" and "scikit-learn digits" in first.provenance
    assert len(first.train_y) + len(first.test_y) == 1797
    train_counts, test_counts = np.bincount(first.train_y), np.bincount(first.test_y)
    assert len(train_counts) == len(test_counts) == 10
    assert np.all(np.abs(test_counts / (train_counts + test_counts) - stl.PROXY_TEST_FRACTION) < 0.02)
    keep, val = stl.split_validation(first.train_y, 0.1, seed=0)
    assert not set(keep.tolist()) & set(val.tolist()) and len(keep) + len(val) == len(first.train_y)
    assert np.all(np.bincount(first.train_y[val], minlength=10) > 0)
    np.testing.assert_array_equal(val, stl.split_validation(first.train_y, 0.1, seed=0)[1])
    expected = np.array(first.test_x)
    del first, second  # memory maps of the files about to be damaged
    (folder / "test_X.bin").write_bytes(b"broken")
    with pytest.warns(UserWarning, match="proxy cache .* is corrupt"):
        rebuilt = stl.build_proxy(seed=0, root=tmp_path)
    np.testing.assert_array_equal(rebuilt.test_x, expected)


def test_parameter_count_at_c128_matches_the_formula():
    model = ParabolicCNN(128)
    count = sum(p.numel() for p in model.parameters())
    assert count == parameter_count(128) == 12_565_002  # ≈ 12.6M, as the slide says


def test_the_transposed_convolution_is_the_adjoint_of_k():
    torch.manual_seed(0)
    weight = torch.randn(5, 5, 3, 3, dtype=torch.float64)
    y, z = torch.randn(2, 5, 7, 7, dtype=torch.float64), torch.randn(2, 5, 7, 7, dtype=torch.float64)
    ky = torch.nn.functional.conv2d(y, weight, padding=1)
    ktz = torch.nn.functional.conv_transpose2d(z, weight, padding=1)
    assert abs(float((ky * z).sum() - (y * ktz).sum())) < 1e-10


def test_weights_are_piecewise_constant_by_the_floor_rule():
    block = ParabolicBlock(2, intervals=4)
    stage_times = [k / 4 + c / 4 for k in range(4) for c in (0.0, 0.5, 0.5, 1.0)]
    picked = [int(block.interval(torch.tensor(t))) for t in stage_times]
    # step k's first three stages use interval k, its end point the next one (t = 1 stays in the last)
    assert picked == [k + (c == 3 and k < 3) for k in range(4) for c in range(4)]
    for dtype in (torch.bfloat16, torch.float16):  # the stage times f receives at low precision
        assert [int(block.interval(torch.tensor(t, dtype=dtype))) for t in stage_times] == picked


def test_the_ode_block_under_the_engine_matches_autograd_in_float64():
    torch.manual_seed(0)
    block = ParabolicBlock(3, intervals=4).double()
    y0 = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    ours = odeint(block, y0, t, precision="fp64", output="final")
    ref = unrolled_rk(block, y0, t, "rk4")[-1]
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(ours)
    g_ours = torch.autograd.grad((weights * ours).sum(), [y0, *block.parameters()])
    g_ref = torch.autograd.grad((weights * ref).sum(), [y0, *block.parameters()])
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_augmentation_is_seeded_and_shaped():
    images = torch.from_numpy(_pattern_images(4))
    a = augment(images, 32, torch.Generator().manual_seed(1))
    b = augment(images, 32, torch.Generator().manual_seed(1))
    c = augment(images, 32, torch.Generator().manual_seed(2))
    assert a.shape == (4, 3, 32, 32) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert resize(images, 96).shape == (4, 3, 96, 96)


@pytest.fixture(scope="module")
def smoke_cells():
    spec = load_spec(next(p for p in spec_files() if p.stem == "stl10"))
    return {(c.backend, c.precision, c.scaling): c for c in expand(spec, "smoke")}


@pytest.mark.parametrize("backend", ["engine", "torchdiffeq"])
def test_smoke_cells_finish_with_finite_numbers_at_fp32(smoke_cells, backend, tmp_path, monkeypatch):
    monkeypatch.setenv("CTBENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("CTBENCH_STL10", raising=False)
    out = run_cell(smoke_cells[(backend, "fp32", "none")], run_dir=tmp_path)
    assert out["status"] == "ok", out["reason"]
    m = out["metrics"]
    for name in ("test_acc", "val_acc", "train_loss", "fwd_s", "bwd_s", "iter_s", "input_s", "total_s",
                 "saved_for_backward_mib", "iters_done", "epochs_done", "params_m"):
        assert np.isfinite(m[name]), name
    assert 0 <= m["test_acc"] <= 1 and m["iters_done"] == 4
    assert out["extra"]["dataset"] == "stl10-proxy" and "official test split" in out["extra"]["split_note"]
    assert "curve" in out["artifacts"]


def test_fp16_without_scaling_is_recorded_not_crashed(smoke_cells, tmp_path, monkeypatch):
    monkeypatch.setenv("CTBENCH_CACHE", str(tmp_path))
    out = run_cell(smoke_cells[("torchdiffeq", "fp16", "none")], run_dir=tmp_path)
    assert out["status"] in {"ok", "nonfinite"}, out["reason"]
