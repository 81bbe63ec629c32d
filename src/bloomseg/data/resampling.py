"""Scaling images by a factor, and back, on one pixel grid.

Every scaling maps output pixel ``i`` to input position ``(i + 0.5) / factor - 0.5``,
whatever the image's size (not the ratio of two rounded sizes, as a resize to a given
size does). With factors that are multiples of ``1 / GRID``, a block of an image that
starts at a multiple of ``GRID`` px therefore scales onto exactly the pixels the whole
image scales onto, and a large image predicted block by block at a cell diameter equals
the image predicted whole.
"""

from __future__ import annotations

import math

import numpy as np

GRID = 256
"""px: scaling factors are multiples of 1/GRID, and blocks start at multiples of it."""


def grid_factor(factor: float) -> float:
    """``factor`` rounded to a multiple of 1/:data:`GRID` (at least that)."""
    return max(1, round(factor * GRID)) / GRID


def resample(image: np.ndarray, factor: float) -> np.ndarray:
    """An image scaled by ``factor``: bilinear, antialiased when shrinking.

    Args:
        image: (H, W) or (H, W, C) uint8.
        factor: > 0.

    Returns:
        uint8, (floor(H f), floor(W f)) (at least 1 px a side), channels kept.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image)).float()
    x = x[None, None] if image.ndim == 2 else x.permute(2, 0, 1)[None]
    out = scale_tensor(x, factor, tuple(max(1, math.floor(n * factor)) for n in image.shape[:2]))
    out = out.round_().clamp_(0, 255).to(torch.uint8)[0]
    return (out[0] if image.ndim == 2 else out.permute(1, 2, 0)).numpy()


def scale_tensor(x, factor: float, size: tuple[int, int]):
    """A (B, C, H, W) float tensor scaled by ``factor`` onto ``size`` (rows and columns
    past the scaled image's repeat its last; a smaller size crops): how predictions made
    at a scale are mapped back onto the image's grid, with ``1 / factor`` and its size."""
    import torch.nn.functional as F

    exact = tuple(math.floor(n * factor) for n in x.shape[-2:])
    if min(exact) < 1:  # too small to scale exactly: stretch onto the size
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                             antialias=factor < 1)
    out = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False,
                        antialias=factor < 1, recompute_scale_factor=False)
    out = out[..., :size[0], :size[1]]
    pad = (0, size[1] - out.shape[-1], 0, size[0] - out.shape[-2])
    return F.pad(out, pad, mode="replicate") if any(pad) else out
