"""The one grid cutter: tiles, chunks, windows, overlapping tiles and blocks."""

from __future__ import annotations

import numpy as np

from bloomseg.grids import blocks, chunks, overlapping, spread, windows


def test_spread_covers_the_length_from_edge_to_edge():
    assert spread(1600, 224) == [0, 197, 393, 590, 786, 983, 1179, 1376]
    assert spread(224, 224) == [0]
    assert spread(100, 224) == [0]
    starts = spread(1200, 224)
    assert starts[-1] + 224 == 1200 and len(starts) == 6


def test_chunks_are_near_equal_and_cover_the_range():
    assert chunks(86, 14) == [(0, 12), (12, 25), (25, 37), (37, 49), (49, 61), (61, 74), (74, 86)]
    assert chunks(3, 14) == [(0, 3)]
    assert chunks(28, 14) == [(0, 14), (14, 28)]


def test_overlapping_tiles_step_by_the_overlap():
    starts = overlapping(1600, 224, 0.75)
    assert len(starts) == 26 and starts[0] == 0 and starts[-1] == 1376
    assert max(np.diff(starts)) <= 56
    assert len(overlapping(1200, 224, 0.75)) == 19  # the reference's 26 x 19 = 494 tiles
    assert overlapping(224, 224, 0.5) == [0]


def test_block_grid_covers_the_image_once():
    cores = blocks(700, 530, 256)
    cover = np.zeros((700, 530), int)
    for r0, r1, c0, c1 in cores:
        cover[r0:r1, c0:c1] += 1
    assert (cover == 1).all() and len(cores) == 3 * 3


def test_windows_grow_each_chunk_by_the_margin_within_the_length():
    assert windows(30, 10, 3) == [(0, 10, 0, 13), (10, 20, 7, 23), (20, 30, 17, 30)]
    assert windows(5, 10, 3) == [(0, 5, 0, 5)]
