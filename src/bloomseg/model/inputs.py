"""What the network sees of an image: views in each input mode, the eight flips and
rotations, and the normalisation.

Input modes:

``tiling``   square tiles (DinoBloom's 224 px), training on crops, validating on a grid;
``padding``  the whole image, padded on the bottom and right to a multiple of 14;
``resize``   the whole image resized to one tile (what a 224 px classifier sees).

Padding reflects the image *and* its mask, so reflected cells stay labelled as cells.

Flips and rotations are numbered elements of the dihedral group (:func:`dihedral`), the
one system that training augmentation, the feature cache and test-time augmentation use,
so a label map or a prediction moves with its image and back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bloomseg.backbone import PATCH_SIZE
from bloomseg.grids import spread
from bloomseg.model.config import MODES

LEVELS = (1.0, 99.0)
"""Percentiles of each channel that ``percentile`` normalisation maps to black and white."""
LEVEL_SAMPLE = 512 * 512
"""Pixels at most that an image's levels are measured on (every n-th row and column)."""
MIN_LEVEL_RANGE = 40
"""Levels at least between a channel's black and white point: a field of background alone
(or with a cell or two) keeps its noise as noise instead of stretching it into cells.
Stained smears span more (the training images of the default model: 46 and more)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""DINOv2 and DinoBloom were trained on ImageNet-normalised RGB."""

DIHEDRAL = 8
"""Number of flip/rotation variants: k = 0..7 (rotations by 90 * (k % 4), mirrored if k >= 4)."""

MIRRORS = (0, 4, 6, 2)
"""The identity and the three mirror flips as dihedral variants: left-right (4),
top-bottom (6) and both (2, a half turn); test-time augmentation averages over them."""


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


def dihedral(array: np.ndarray | Tensor, k: int, axes: tuple[int, int] = (0, 1)
             ) -> np.ndarray | Tensor:
    """Variant ``k`` of an array or tensor: rotate by 90*(k % 4) degrees in the plane of
    ``axes`` (rows, columns), then mirror left-right if k >= 4. k = 0 is the identity.

    Args:
        array: (H, W, ...) image, mask or target, or a (C, H, W) tensor with axes (1, 2).
        k: the variant, 0..7.
        axes: the row and column axes.

    Returns:
        The same type; a NumPy result is contiguous.
    """
    if not 0 <= k < DIHEDRAL:
        raise ValueError(f"dihedral index {k} not in 0..7")
    if isinstance(array, Tensor):
        out = torch.rot90(array, k % 4, axes)
        return out.flip(axes[1]) if k >= 4 else out
    out = np.rot90(array, k % 4, axes=axes)
    return np.ascontiguousarray(np.flip(out, axes[1]) if k >= 4 else out)


def dihedral_boxes(boxes: np.ndarray, k: int, height: int, width: int) -> np.ndarray:
    """Boxes moved as :func:`dihedral` moves their image.

    Args:
        boxes: (N, 4) x0, y0, x1, y1 in pixel edges of an (height, width) image.
        k: the variant, 0..7.

    Returns:
        (N, 4) in the pixel edges of the moved image.
    """
    x0, y0, x1, y1 = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).T
    for _ in range(k % 4):  # each quarter turn: row r, column c -> row W - c, column r
        x0, y0, x1, y1 = y0, width - x1, y1, width - x0
        height, width = width, height
    if k >= 4:
        x0, x1 = width - x1, width - x0
    return np.stack([x0, y0, x1, y1], axis=1)


def dihedral_inverse(k: int) -> int:
    """The index that undoes variant ``k``."""
    return (4 - k) % 4 if k < 4 else k  # mirrors (with or without rotation) are their own inverse


def level_sample(image: np.ndarray) -> np.ndarray:
    """Every n-th row and column of an image, at most :data:`LEVEL_SAMPLE` pixels: what
    its levels are measured on (a memory map is read sparsely)."""
    step = max(1, math.ceil(math.sqrt(image.shape[0] * image.shape[1] / LEVEL_SAMPLE)))
    return np.array(image[::step, ::step])


def image_levels(image: np.ndarray) -> np.ndarray:
    """The black and white point of each channel of an image: its :data:`LEVELS`
    percentiles, measured on at most :data:`LEVEL_SAMPLE` evenly spread pixels.

    Args:
        image: (H, W, 3) uint8 (a memory map is read sparsely).

    Returns:
        (2, 3) float32: the low row and the high row, at least :data:`MIN_LEVEL_RANGE`
        apart (the black point lowered where they are closer).
    """
    low, high = np.percentile(level_sample(image).reshape(-1, 3), LEVELS, axis=0)
    return np.stack([np.minimum(low, high - MIN_LEVEL_RANGE), high]).astype(np.float32)


def normalise(image: np.ndarray, method: str, levels: np.ndarray | None = None) -> np.ndarray:
    """An image as a model of normalisation ``method`` sees it.

    ``percentile`` stretches each channel so its 1st percentile is black and its 99th
    white (cellpose's ``normalize99``, per channel, as uint8): a pale, a dark and a tinted
    microscope all give the network smears of the same range. ``none`` leaves the image.
    The levels come from the whole image, so a tile or a block of a large image is
    normalised as the whole image is.

    Args:
        image: (H, W, 3) uint8.
        method: ``none`` or ``percentile``.
        levels: (2, 3) from :func:`image_levels` of the whole image (default: of ``image``).

    Returns:
        (H, W, 3) uint8.
    """
    if method == "none":
        return image
    if method != "percentile":
        raise ValueError(f"unknown normalisation {method!r}")
    low, high = image_levels(image) if levels is None else levels
    ramp = np.arange(256, dtype=np.float32)[:, None]
    table = np.clip((ramp - low) * (255.0 / (high - low)), 0, 255).round().astype(np.uint8)
    return np.stack([table[image[..., c], c] for c in range(3)], axis=-1)


def to_tensor(image: np.ndarray) -> Tensor:
    """RGB uint8 image -> ImageNet-normalised float tensor.

    Args:
        image: (H, W, 3) uint8.

    Returns:
        (1, 3, H, W) float32.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    image = np.require(image, requirements=["C", "W"])  # copies read-only (memory-mapped) input
    x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)
