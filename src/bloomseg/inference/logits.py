"""Whole-image prediction for images of any size, with memory bounded by a window.

``tiling`` mode has two strategies:

- ``stitch`` (default): the patch grid is cut into near-equal tiles of at most
  DinoBloom's 16x16 patches (optionally each with ``context`` patches of context around
  it), and the tile features are stitched into one feature map; the head then runs on
  the whole map, so it sees across tile borders and the backbone pays for each pixel
  once.
- ``blend``: the reference system's method: tiles of ``tile`` px at ``overlap``, each
  through backbone and head, logits blended with Gaussian weights (494 tiles for a
  1600x1200 image at 75% overlap).

``padding`` runs the whole image padded to a multiple of 14; ``resize`` runs it resized
to one tile and resizes the logits back. A U-Net is fully convolutional and runs on
windows of the image. Large images are processed in windows (with a margin for the
head's receptive field), so memory depends on the window, not on the image.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bloomseg.grids import overlapping, windows
from bloomseg.inference.options import InferenceOptions
from bloomseg.inference.stitch import FeatureSource, stitched_features
from bloomseg.model.inputs import (
    MIRRORS,
    dihedral,
    dihedral_inverse,
    pad_reflect,
    render,
    to_tensor,
    whole_view,
)
from bloomseg.model.network import SegmentationModel


def _live(model: SegmentationModel) -> FeatureSource:
    """The model's own backbone as a feature source."""
    return lambda names, tiles: model.features(tiles)


def _stitch(model: SegmentationModel, image: np.ndarray, opts: InferenceOptions,
            features: FeatureSource | None) -> Tensor:
    """Logits of an image through windows; a ViT model sees stitched features."""
    h, w = image.shape[:2]
    # window and margin in whole grid cells, so every region starts on the model's grid
    # (ViT patches, U-Net pooling) as the whole image does; the margin covers its reach
    p = model.grid
    hp, wp = max(1, math.ceil(h / p)) * p, max(1, math.ceil(w / p)) * p
    size, margin = opts.window // p, math.ceil(model.reach / p)
    out: Tensor | None = None
    for a, b, ra, rb in windows(hp // p, size, margin):
        for c, d, rc, rd in windows(wp // p, size, margin):
            region = image[ra * p:rb * p, rc * p:rd * p]
            if model.backbone is None:
                # the U-Net pads to its own multiple as it does for the whole image
                logits = model(to_tensor(region))
            else:
                # pad each region, not the image: a copy of a huge image costs as much as it
                x = to_tensor(pad_reflect(region, (rb - ra) * p, (rd - rc) * p))
                maps = stitched_features(features or _live(model), x, opts.tile,
                                         opts.context, opts.batch_size, (ra, rc))
                logits = model.forward_head(maps, x)
            if out is None:
                out = logits.new_zeros((logits.shape[1], h, w))
            b_px, d_px = min(b * p, h), min(d * p, w)
            out[:, a * p:b_px, c * p:d_px] = logits[0, :, (a - ra) * p:b_px - ra * p,
                                                    (c - rc) * p:d_px - rc * p]
    return out


def gaussian_weights(tile: int, sigma: float) -> Tensor:
    """(tile, tile) blending weights: a Gaussian of sigma = ``sigma`` * tile about the
    centre, 1 at the centre, never below 1e-4 so tile edges still count."""
    centre = (tile - 1) / 2
    g = torch.exp(-((torch.arange(tile) - centre) ** 2) / (2 * (sigma * tile) ** 2))
    return torch.outer(g, g).clamp_min(1e-4)


def _blend(model: SegmentationModel, image: np.ndarray, opts: InferenceOptions) -> Tensor:
    """The reference's sliding window: overlapping tiles, Gaussian-blended logits."""
    h, w = image.shape[:2]
    t = opts.tile
    padded = pad_reflect(image, max(h, t), max(w, t))
    weight = gaussian_weights(t, opts.sigma)
    boxes = [(y, x) for y in overlapping(padded.shape[0], t, opts.overlap)
             for x in overlapping(padded.shape[1], t, opts.overlap)]
    total: Tensor | None = None
    norm = torch.zeros(padded.shape[:2])
    for start in range(0, len(boxes), opts.batch_size):
        batch = boxes[start:start + opts.batch_size]
        x = torch.cat([to_tensor(padded[y:y + t, x0:x0 + t]) for y, x0 in batch])
        logits = model(x)
        if total is None:
            total = logits.new_zeros((logits.shape[1], *padded.shape[:2]))
        for (y, x0), tile_logits in zip(batch, logits):
            total[:, y:y + t, x0:x0 + t] += tile_logits * weight
            norm[y:y + t, x0:x0 + t] += weight
    return (total / norm)[:, :h, :w]


def predict_logits(model: SegmentationModel, image: np.ndarray,
                   options: InferenceOptions = InferenceOptions(),
                   features: FeatureSource | None = None) -> Tensor:
    """Logits of a whole image; call under ``torch.no_grad()`` with the model in eval mode.

    Args:
        model: the segmentation model.
        image: (H, W, 3) uint8 RGB, any size from 1x1.
        options: mode, strategy and their settings.
        features: where backbone features come from in the stitch strategy (default:
            the backbone); training passes its feature cache.

    Returns:
        (C, H, W) float32 logits.
    """
    options.check()
    if options.tta:
        plain = replace(options, tta=False)
        total = None
        for k in MIRRORS:  # cached features are of the image as it is
            flipped = dihedral(image, k) if k else image
            logits = predict_logits(model, flipped, plain, features if not k else None)
            logits = dihedral(logits, dihedral_inverse(k), axes=(1, 2)) if k else logits
            total = logits if total is None else total + logits
        return total / len(MIRRORS)
    if options.mode == "tiling":
        if options.strategy == "blend":
            return _blend(model, image, options)
        return _stitch(model, image, options, features)
    h, w = image.shape[:2]
    if model.backbone is None and options.mode == "padding":
        return _stitch(model, image, options, None)
    view = whole_view(h, w, options.mode, options.tile)
    x = to_tensor(render(image, view, options.mode, options.tile))
    if model.backbone is None:
        logits = model(x)
    else:
        maps = features([view.name], x) if features is not None else model.features(x)
        logits = model.forward_head(maps, x)
    if options.mode == "resize":
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0]
    return logits[0, :, :h, :w]
