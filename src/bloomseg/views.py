"""What the network sees of an image in each input mode.

``tiling``   square tiles (DinoBloom's 224 px), training on crops, validating on a grid;
``padding``  the whole image, padded on the bottom and right to a multiple of 14;
``resize``   the whole image resized to one tile (what a 224 px classifier sees).

Padding reflects the image *and* its mask, so reflected cells stay labelled as cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bloomseg.vit import PATCH_SIZE

MODES = ("tiling", "padding", "resize")


@dataclass(frozen=True)
class View:
    """A region of an image: the box (y, x, h, w) in image pixels, and a name that is
    unique per image for the feature cache."""

    name: str
    y: int
    x: int
    h: int
    w: int


def pad_reflect(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad the bottom and right of an (H, W, ...) array to (height, width) by reflection
    (edge replication where the array is too small to reflect)."""
    ph, pw = height - array.shape[0], width - array.shape[1]
    if ph < 0 or pw < 0:
        raise ValueError(f"cannot pad {array.shape[:2]} down to {(height, width)}")
    if ph == 0 and pw == 0:
        return np.asarray(array)
    mode = "reflect" if ph < array.shape[0] and pw < array.shape[1] else "edge"
    return np.pad(array, [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2), mode=mode)


def spread(length: int, tile: int) -> list[int]:
    """Start offsets of ceil(length / tile) tiles spread evenly over ``length`` pixels,
    the first at 0 and the last flush with the end (one at 0 if the length is short)."""
    n = max(1, math.ceil(length / tile))
    last = max(0, length - tile)
    return [round(i * last / (n - 1)) if n > 1 else 0 for i in range(n)]


def chunks(length: int, size: int) -> list[tuple[int, int]]:
    """Cut range(length) into ceil(length / size) near-equal [start, stop) parts."""
    count = max(1, math.ceil(length / size))
    bounds = [round(i * length / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def tile_views(height: int, width: int, tile: int) -> list[View]:
    """Tiles covering an image, inside it, overlapping as little as possible."""
    return [View(f"t{tile}_{y}_{x}", y, x, tile, tile)
            for y in spread(height, tile) for x in spread(width, tile)]


def random_view(height: int, width: int, tile: int, rng: np.random.Generator) -> View:
    """A uniformly placed tile (at 0 along a side shorter than the tile)."""
    y = int(rng.integers(0, max(0, height - tile) + 1))
    x = int(rng.integers(0, max(0, width - tile) + 1))
    return View(f"r{tile}_{y}_{x}", y, x, tile, tile)


def whole_view(height: int, width: int, mode: str, tile: int) -> View:
    """The whole image as one view, named for the mode."""
    return View("padded" if mode == "padding" else f"resized{tile}", 0, 0, height, width)


def training_views(height: int, width: int, mode: str, tile: int, count: int,
                   rng: np.random.Generator) -> list[View]:
    """The fixed views of one training image.

    Tiling draws ``count`` tiles of the covering grid (all of them if fewer), so a
    feature cache holds a finite set per image; the whole-image modes have one view.
    """
    if mode != "tiling":
        return [whole_view(height, width, mode, tile)]
    grid = tile_views(height, width, tile)
    if count >= len(grid):
        return grid
    return [grid[i] for i in sorted(rng.choice(len(grid), size=count, replace=False))]


def render(array: np.ndarray, view: View, mode: str, tile: int) -> np.ndarray:
    """The network input of a view, from an image (H, W, 3) uint8 or a mask (H, W) bool.

    Tiles are padded to the tile size where the image is smaller; ``padding`` pads to a
    multiple of 14; ``resize`` resizes to tile x tile (bilinear for images, nearest
    neighbour for masks).
    """
    crop = np.asarray(array[view.y:view.y + view.h, view.x:view.x + view.w])
    if mode == "tiling":
        return pad_reflect(crop, tile, tile)
    if mode == "padding":
        return pad_reflect(crop, math.ceil(crop.shape[0] / PATCH_SIZE) * PATCH_SIZE,
                           math.ceil(crop.shape[1] / PATCH_SIZE) * PATCH_SIZE)
    if mode == "resize":
        from PIL import Image

        resample = Image.NEAREST if crop.dtype == bool else Image.BILINEAR
        return np.asarray(Image.fromarray(crop).resize((tile, tile), resample))
    raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
