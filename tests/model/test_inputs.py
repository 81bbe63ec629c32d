"""Tile placement, padding and resizing of what the network sees."""

from __future__ import annotations

import numpy as np
import pytest

from bloomseg.model.inputs import (
    MIN_LEVEL_RANGE,
    dihedral,
    dihedral_boxes,
    image_levels,
    normalise,
    pad_reflect,
    random_view,
    render,
    tile_views,
    training_views,
    whole_view,
)


def test_tile_views_cover_every_pixel_once_named_uniquely():
    views = tile_views(130, 200, 56)
    seen = np.zeros((130, 200), int)
    for v in views:
        seen[v.y:v.y + v.h, v.x:v.x + v.w] += 1
    assert seen.min() >= 1
    assert len({v.name for v in views}) == len(views) == 3 * 4


def test_training_views_are_a_seeded_subset_of_the_grid():
    a = training_views(1200, 1600, "tiling", 224, 8, np.random.default_rng(1))
    b = training_views(1200, 1600, "tiling", 224, 8, np.random.default_rng(1))
    assert a == b and len(a) == 8
    assert set(a) <= set(tile_views(1200, 1600, 224))
    assert training_views(100, 100, "tiling", 224, 8, np.random.default_rng(0)) == tile_views(100, 100, 224)
    assert training_views(90, 120, "padding", 224, 8, np.random.default_rng(0)) == [
        whole_view(90, 120, "padding", 224)]


def test_random_view_stays_inside():
    rng = np.random.default_rng(0)
    for _ in range(50):
        v = random_view(300, 250, 224, rng)
        assert 0 <= v.y <= 76 and 0 <= v.x <= 26


def test_padding_reflects_image_and_mask_alike():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    mask = image[..., 0] % 2 == 0
    padded = pad_reflect(image, 8, 9)
    assert padded.shape == (8, 9, 3)
    np.testing.assert_array_equal(padded[:5, :7], image)
    np.testing.assert_array_equal(padded[5, :7], image[3])  # reflection about the last row
    np.testing.assert_array_equal(pad_reflect(mask, 8, 9), padded[..., 0] % 2 == 0)
    assert pad_reflect(image[:1, :1], 3, 3).shape == (3, 3, 3)  # too small to reflect: edge
    with pytest.raises(ValueError):
        pad_reflect(image, 4, 9)


@pytest.mark.parametrize("mode, shape", [("tiling", (42, 42)), ("padding", (42, 56)),
                                         ("resize", (42, 42))])
def test_render_shapes_and_mask_values(mode, shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    mask = rng.random((30, 50)) > 0.5
    view = tile_views(30, 50, 42)[0] if mode == "tiling" else whole_view(30, 50, mode, 42)
    rgb, label = render(image, view, mode, 42), render(mask, view, mode, 42)
    assert rgb.shape == (*shape, 3) and rgb.dtype == np.uint8
    assert label.shape == shape and label.dtype == bool
    if mode == "padding":
        np.testing.assert_array_equal(rgb[:30, :50], image)
        np.testing.assert_array_equal(label[:30, :50], mask)


def test_one_flip_system_for_arrays_and_tensors():
    """Training's augmentation and test-time augmentation share the dihedral variants:
    the same on an (H, W, C) array and a (C, H, W) tensor, each undone by its inverse,
    and MIRRORS are the three mirror flips."""
    import torch

    from bloomseg.model.inputs import DIHEDRAL, MIRRORS, dihedral, dihedral_inverse

    image = np.random.default_rng(0).random((5, 7, 3))
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    for k in range(DIHEDRAL):
        moved = dihedral(image, k)
        np.testing.assert_array_equal(dihedral(tensor, k, axes=(1, 2)).permute(1, 2, 0).numpy(),
                                      moved)
        np.testing.assert_array_equal(dihedral(moved, dihedral_inverse(k)), image)
    flips = [image, image[:, ::-1], image[::-1], image[::-1, ::-1]]
    for k, flipped in zip(MIRRORS, flips):
        np.testing.assert_array_equal(dihedral(image, k), flipped)


def test_dihedral_boxes_move_as_their_image_moves():
    h, w = 13, 20
    boxes = np.array([[2, 3, 9, 7], [0, 0, 5, 13], [15, 4, 20, 6]], float)

    def paint(bs, height, width):
        out = np.zeros((height, width, len(bs)), bool)
        for i, (x0, y0, x1, y1) in enumerate(bs.astype(int)):
            out[y0:y1, x0:x1, i] = True
        return out

    for k in range(8):
        moved = dihedral(paint(boxes, h, w), k)
        assert np.array_equal(moved, paint(dihedral_boxes(boxes, k, h, w), *moved.shape[:2])), k


def test_percentile_normalisation_maps_each_channels_levels_to_black_and_white():
    rng = np.random.default_rng(0)
    image = np.stack([rng.integers(40, 201, (300, 300)), rng.integers(0, 101, (300, 300)),
                      np.full((300, 300), 90)], axis=-1).astype(np.uint8)
    low, high = image_levels(image)
    assert low[0] == pytest.approx(np.percentile(image[..., 0], 1))
    assert high[1] == pytest.approx(np.percentile(image[..., 1], 99))
    assert (low[2], high[2]) == (90 - MIN_LEVEL_RANGE, 90)  # a flat channel is not stretched
    out = normalise(image, "percentile")
    for c in range(3):  # linear between the levels, black and white past them
        expected = np.clip((image[..., c] - low[c]) * 255 / (high[c] - low[c]), 0, 255)
        assert np.abs(out[..., c] - expected).max() <= 0.5 + 1e-4
    assert (out[..., 0] == 0).mean() == pytest.approx(0.01, abs=1 / 161)  # a level is 1/161
    assert normalise(image, "none") is image
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise(image, "zscore")


def test_a_field_of_background_is_not_stretched_into_cells():
    rng = np.random.default_rng(1)
    empty = np.clip(rng.normal(225, 2, (200, 200, 3)), 0, 255).astype(np.uint8)
    seen = normalise(empty, "percentile")
    assert seen.min() > 150  # noise of a few levels stays light, not black and white


def test_normalisation_undoes_a_microscopes_levels_and_a_tile_takes_the_wholes():
    from bloomseg.data.synthetic import smear

    image, _ = smear(np.random.default_rng(2), 200, 240)
    # lower contrast, brighter: each channel still spans MIN_LEVEL_RANGE or more
    pale = (image.astype(np.float32) * 0.8 + 40).round().astype(np.uint8)
    a, b = normalise(image, "percentile"), normalise(pale, "percentile")
    assert np.abs(a.astype(int) - b).mean() < 2.5
    tile = normalise(image[50:106, 60:116], "percentile", image_levels(image))
    assert np.array_equal(tile, a[50:106, 60:116])
