"""Batched image augmentation on the cell's device (the reference's torchvision pipeline, as tensor ops).

RandomResizedCrop(size, scale=(0.5, 1), ratio=(3/4, 4/3)) and a horizontal flip are one affine resampling
per image (`affine_grid` + `grid_sample`); ColorJitter(0.4, 0.4, 0.4, 0.1) applies brightness, contrast,
saturation and hue in a random order per batch with per-image factors; RandomGrayscale(p=0.1); then
normalization. Random numbers come from the cell's generator on the CPU (a few per image) and are moved
to the device: the images never leave it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["augment", "resize", "normalize", "MEAN", "STD"]

# STL-10 channel statistics (the usual published values); the proxy is normalized the same way.
MEAN = (0.4467, 0.4398, 0.4066)
STD = (0.2603, 0.2566, 0.2713)
_LUMA = (0.299, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _crop_and_flip(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    area = _uniform(gen, n, 0.5, 1.0)
    log_ratio = _uniform(gen, n, math.log(3 / 4), math.log(4 / 3))
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), [n, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([hue, sat, maxc], 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [torch.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    out = torch.zeros_like(x)
    for k, rgb in enumerate(choices):
        out = torch.where((i == k).unsqueeze(1), rgb, out)
    return out


def _jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]

    def factor(lo, hi):
        return _uniform(gen, n, lo, hi).to(x.device, x.dtype).view(n, 1, 1, 1)

    ops = {
        "brightness": lambda y, f: (y * f).clamp(0, 1),
        "contrast": lambda y, f: ((y - _gray(y).mean((2, 3), keepdim=True)) * f
                                  + _gray(y).mean((2, 3), keepdim=True)).clamp(0, 1),
        "saturation": lambda y, f: ((y - _gray(y)) * f + _gray(y)).clamp(0, 1),
        "hue": None,
    }
    factors = {"brightness": factor(0.6, 1.4), "contrast": factor(0.6, 1.4), "saturation": factor(0.6, 1.4),
               "hue": factor(-0.1, 0.1)}
    for k in torch.randperm(4, generator=gen).tolist():
        name = list(ops)[k]
        if name == "hue":
            hsv = _rgb_to_hsv(x)
            hsv = torch.cat([(hsv[:, :1] + factors["hue"]) % 1.0, hsv[:, 1:]], 1)
            x = _hsv_to_rgb(hsv).clamp(0, 1)
        else:
            x = ops[name](x, factors[name])
    return x


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(images: torch.Tensor, size: int, gen: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """uint8 (n, 3, H, W) on any device → augmented, normalized float (n, 3, size, size) on that device."""
    x = images.to(dtype) / 255.0
    x = _crop_and_flip(x, size, gen)
    x = _jitter(x, gen)
    gray = torch.rand(x.shape[0], generator=gen) < 0.1
    if bool(gray.any()):
        x = torch.where(gray.to(x.device).view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
    return normalize(x)


def resize(images: torch.Tensor, size: int, dtype=torch.float32) -> torch.Tensor:
    """The evaluation transform: uint8 → resized (bilinear) and normalized float, no randomness."""
    x = images.to(dtype) / 255.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    return normalize(x)
