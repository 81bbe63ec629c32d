"""Whole-image DinoBloom patch features and their PCA picture."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from bloomseg.preprocess import to_tensor
from bloomseg.vit import PATCH_SIZE, TRAIN_SIZE, pad_to_patch_multiple


def extract_features(backbone: nn.Module, image: np.ndarray, tile: int = TRAIN_SIZE,
                     batch_size: int = 8) -> np.ndarray:
    """Patch features of a whole image, computed on non-overlapping tiles.

    The image is padded to whole tiles, every tile goes through the backbone once at
    the size it was trained at, and the tile feature maps are stitched.

    Args:
        backbone: a module mapping (B, 3, t, t) to (B, D, t/14, t/14).
        image: (H, W, 3) uint8 RGB.
        tile: tile side in pixels, a multiple of 14.
        batch_size: tiles per backbone call.

    Returns:
        (D, ceil(H/14), ceil(W/14)) float32 features; patch (i, j) covers pixels
        [14i, 14i+14) x [14j, 14j+14).
    """
    if tile <= 0 or tile % PATCH_SIZE:
        raise ValueError(f"tile size {tile} must be a positive multiple of {PATCH_SIZE}")
    h, w = image.shape[:2]
    x = pad_to_patch_multiple(to_tensor(image), tile)[0]
    n_rows, n_cols = x.shape[1] // tile, x.shape[2] // tile
    # (3, R*t, C*t) -> (R*C, 3, t, t), row-major over tiles
    tiles = x.unfold(1, tile, tile).unfold(2, tile, tile).permute(1, 2, 0, 3, 4)
    tiles = tiles.reshape(n_rows * n_cols, 3, tile, tile)
    device = next(backbone.parameters()).device
    with torch.inference_mode():
        maps = torch.cat([backbone(tiles[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, len(tiles), batch_size)])
    g = tile // PATCH_SIZE
    maps = maps.reshape(n_rows, n_cols, -1, g, g).permute(2, 0, 3, 1, 4)
    maps = maps.reshape(maps.shape[0], n_rows * g, n_cols * g)
    return maps[:, : math.ceil(h / PATCH_SIZE), : math.ceil(w / PATCH_SIZE)].numpy()


def pca_rgb(features: np.ndarray) -> np.ndarray:
    """The first three principal components of patch features as colours.

    Args:
        features: (D, h, w) feature map.

    Returns:
        (h, w, 3) uint8; each channel is one component stretched between its 1st and
        99th percentile. Component signs are fixed so the picture is reproducible.
    """
    d, h, w = features.shape
    x = torch.from_numpy(features.reshape(d, -1).T).double()
    x = x - x.mean(dim=0)
    _, vectors = torch.linalg.eigh(x.T @ x)
    top = vectors[:, -3:].flip(1)  # eigh sorts ascending
    top = top * torch.sign(top[top.abs().argmax(dim=0), torch.arange(top.shape[1])])
    proj = (x @ top).numpy()
    lo, hi = np.percentile(proj, [1, 99], axis=0)
    rgb = np.clip((proj - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    if rgb.shape[1] < 3:  # fewer feature channels than colours
        rgb = np.pad(rgb, ((0, 0), (0, 3 - rgb.shape[1])))
    return (rgb.reshape(h, w, 3) * 255).round().astype(np.uint8)


def pca_figure(image: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The image and its feature PCA side by side, at the image's size.

    Returns:
        (H, 2W, 3) uint8.
    """
    h, w = image.shape[:2]
    pca = pca_rgb(features).repeat(PATCH_SIZE, axis=0).repeat(PATCH_SIZE, axis=1)[:h, :w]
    return np.concatenate([image, pca], axis=1)
