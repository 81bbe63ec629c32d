"""What a predict run writes for each image, and how large images are handled: settings
only, checked in one place."""

from __future__ import annotations

from dataclasses import dataclass

from bloomseg.data.images import MAX_PIXELS, TILE
from bloomseg.errors import ConfigError
from bloomseg.settings import POSITIVE_INT, Range, check_ranges, setting

LARGE_PIXELS = 6000 * 6000
"""Images with more pixels than this are predicted block-wise unless told otherwise."""


@dataclass(frozen=True)
class OutputOptions:
    """What is written for each image, and how large images are handled.

    Attributes:
        save_prob: also the float32 probability, ``<stem>_prob.tif``.
        cells: one label per cell: labels, cell table and GeoJSON.
        coco: also one COCO file for the run (implies ``cells``).
        large: predict block-wise (True), in memory (False), or block-wise above
            :data:`LARGE_PIXELS` pixels (None).
        block: block core side, px (a multiple of 256).
        halo: context around each block, px; more than the largest cell.
        max_pixels: larger images are refused (None: no limit), see
            :func:`bloomseg.data.images.read_image`.
        qc_strict: leave the images whose quality verdict is ``check`` out of the run's
            totals and parasitemia (they are still written and listed).
    """

    save_prob: bool = False
    cells: bool = False
    coco: bool = False
    large: bool | None = None
    block: int = setting(2048, Range(int, TILE))
    halo: int = setting(256, Range(int, 0))
    max_pixels: int | None = setting(MAX_PIXELS, POSITIVE_INT)
    qc_strict: bool = False

    def __post_init__(self) -> None:
        if self.coco and not self.cells:  # the COCO file is made of the cells
            object.__setattr__(self, "cells", True)

    def check(self) -> None:
        """Raise ConfigError naming an invalid setting."""
        check_ranges(self)
        if self.block % TILE:
            raise ConfigError(f"block must be a multiple of {TILE}, got {self.block}")
        if self.halo >= self.block:
            raise ConfigError(f"halo must be under the block ({self.block}), got {self.halo}")
