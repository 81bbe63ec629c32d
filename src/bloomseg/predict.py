"""Whole-image logits from a segmentation model, in each input mode."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bloomseg.model import SegmentationModel
from bloomseg.preprocess import to_tensor
from bloomseg.views import MODES, View, pad_reflect, render, tile_views, whole_view

FeatureSource = Callable[[list[str], Tensor], list[Tensor]]
"""(view names, (B, 3, h, w) normalised inputs) -> the model's feature maps for them;
lets training read cached features instead of running the backbone."""


def _logits(model: SegmentationModel, names: list[str], x: Tensor,
            features: FeatureSource | None) -> Tensor:
    if model.backbone is None:
        return model(x)
    maps = features(names, x) if features is not None else model.features(x)
    return model.forward_head(maps, x)


def predict_logits(model: SegmentationModel, image: np.ndarray, mode: str = "tiling",
                   tile: int = 224, batch_size: int = 8,
                   features: FeatureSource | None = None) -> Tensor:
    """Logits of a whole image; call under ``torch.no_grad()`` with the model in eval mode.

    ``tiling`` runs a grid of non-overlapping tiles over the image (reflect-padded to
    whole tiles) and stitches them; ``padding`` runs the image padded to a multiple of
    14; ``resize`` runs it resized to one tile and resizes the logits back. A U-Net is
    fully convolutional and runs on the whole image except in ``resize`` mode.

    Args:
        model: the segmentation model.
        image: (H, W, 3) uint8 RGB.
        mode: ``tiling``, ``padding`` or ``resize``.
        tile: tile side (``tiling``) or resized side (``resize``), a multiple of 14.
        batch_size: tiles per forward pass.
        features: where backbone features come from (default: the backbone).

    Returns:
        (C, H, W) float32 logits.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    h, w = image.shape[:2]
    if model.backbone is None and mode != "resize":
        return model(to_tensor(image))[0]
    if mode != "tiling":
        view = whole_view(h, w, mode, tile)
        logits = _logits(model, [view.name], to_tensor(render(image, view, mode, tile)), features)
        if mode == "resize":
            return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0]
        return logits[0, :, :h, :w]
    padded = pad_reflect(image, math.ceil(h / tile) * tile, math.ceil(w / tile) * tile)
    grid = [View(f"g{tile}_{v.y}_{v.x}", v.y, v.x, v.h, v.w)
            for v in tile_views(padded.shape[0], padded.shape[1], tile)]
    out: Tensor | None = None
    for start in range(0, len(grid), batch_size):
        views = grid[start:start + batch_size]
        x = torch.cat([to_tensor(render(padded, v, mode, tile)) for v in views])
        logits = _logits(model, [v.name for v in views], x, features)
        if out is None:
            out = logits.new_zeros((logits.shape[1], padded.shape[0], padded.shape[1]))
        for v, tile_logits in zip(views, logits):
            out[:, v.y:v.y + tile, v.x:v.x + tile] = tile_logits
    return out[:, :h, :w]
