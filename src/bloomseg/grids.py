"""Cutting a length, or an image, into tiles, windows and blocks: the one cutter.

Every grid bloomseg uses comes from here: training and validation tiles (:func:`spread`),
the stitched feature map's cores and the windows of a large prediction (:func:`chunks`,
:func:`windows`), the reference's overlapping tiles (:func:`overlapping`) and the blocks
of an image too large for memory (:func:`blocks`).
"""

from __future__ import annotations

import math


def _even(length: int, tile: int, count: int) -> list[int]:
    """``count`` start offsets spread evenly over ``length`` px, the first at 0 and the
    last flush with the end (one at 0 if the length is short)."""
    last = max(0, length - tile)
    return [round(i * last / (count - 1)) if count > 1 else 0 for i in range(count)]


def spread(length: int, tile: int) -> list[int]:
    """Start offsets of ceil(length / tile) tiles that cover ``length`` px, overlapping as
    little as possible."""
    return _even(length, tile, max(1, math.ceil(length / tile)))


def overlapping(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles stepping by at most tile * (1 - overlap), the first at 0 and
    the last flush with the end (``length`` >= ``tile``)."""
    stride = max(1, round(tile * (1 - overlap)))
    return _even(length, tile, math.ceil((length - tile) / stride) + 1)


def chunks(length: int, size: int) -> list[tuple[int, int]]:
    """Cut range(length) into ceil(length / size) near-equal [start, stop) parts."""
    count = max(1, math.ceil(length / size))
    bounds = [round(i * length / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def windows(length: int, size: int, margin: int) -> list[tuple[int, int, int, int]]:
    """(core start, core stop, region start, region stop) covering range(length): the
    :func:`chunks` of ``size``, each grown by ``margin`` within the length."""
    return [(a, b, max(0, a - margin), min(length, b + margin)) for a, b in chunks(length, size)]


def blocks(height: int, width: int, block: int) -> list[tuple[int, int, int, int]]:
    """Cores (r0, r1, c0, c1) of side ``block`` (smaller at the far edges), raster order."""
    return [(r, min(r + block, height), c, min(c + block, width))
            for r in range(0, height, block) for c in range(0, width, block)]
