"""Backbone features of a whole region from tiles of at most DinoBloom's training size,
each patch computed once and the tiles stitched into one map."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bloomseg.backbone import PATCH_SIZE, TRAIN_SIZE
from bloomseg.grids import chunks

FeatureSource = Callable[[list[str], Tensor], list[Tensor]]
"""(tile names, (B, 3, h, w) normalised tiles) -> feature maps (B, D, h/14, w/14), one
or more; lets training read cached features instead of running the backbone."""


def stitched_features(source: FeatureSource, x: Tensor, tile: int = TRAIN_SIZE, context: int = 0,
                      batch_size: int = 8, origin: tuple[int, int] = (0, 0)) -> list[Tensor]:
    """Feature maps of a whole region, each patch computed once, from tiles of at most
    ``tile`` px.

    The patch grid is cut into near-equal cores of at most tile/14 - 2*context patches;
    each goes through the backbone with ``context`` patches around it, and the cores
    are stitched. Tiles of one shape are batched together.

    Args:
        source: computes the feature maps of a batch of tiles.
        x: (1, 3, h, w) normalised region, h and w multiples of 14.
        tile: largest tile side in px, a multiple of 14.
        context: patches of context around each core.
        batch_size: tiles per ``source`` call.
        origin: the region's top-left patch in the image; tile names are
            ``s{row}_{col}_{rows}x{cols}`` in image patches, so they are stable keys.

    Returns:
        The maps, each (1, D, h/14, w/14).
    """
    gh, gw = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
    core, c = tile // PATCH_SIZE - 2 * context, context
    jobs = []  # (core box, tile box) in patches of the region
    for r0, r1 in chunks(gh, core):
        for c0, c1 in chunks(gw, core):
            jobs.append(((r0, r1, c0, c1), (max(0, r0 - c), min(gh, r1 + c),
                                             max(0, c0 - c), min(gw, c1 + c))))
    by_shape: dict[tuple[int, int], list] = {}
    for job in jobs:
        y0, y1, x0, x1 = job[1]
        by_shape.setdefault((y1 - y0, x1 - x0), []).append(job)
    out: list[Tensor] = []
    p = PATCH_SIZE
    for group in by_shape.values():
        for start in range(0, len(group), batch_size):
            batch = group[start:start + batch_size]
            crops = torch.cat([x[..., y0 * p:y1 * p, x0 * p:x1 * p] for _, (y0, y1, x0, x1) in batch])
            names = [f"s{origin[0] + y0}_{origin[1] + x0}_{y1 - y0}x{x1 - x0}"
                     for _, (y0, y1, x0, x1) in batch]
            maps = source(names, crops)
            if not out:
                out = [m.new_zeros((1, m.shape[1], gh, gw)) for m in maps]
            for i, ((r0, r1, c0, c1), (y0, _, x0, _)) in enumerate(batch):
                for full, m in zip(out, maps):
                    full[0, :, r0:r1, c0:c1] = m[i, :, r0 - y0:r1 - y0, c0 - x0:c1 - x0]
    return out
