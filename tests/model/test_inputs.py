"""Tile placement, padding and resizing of what the network sees."""

from __future__ import annotations

import numpy as np
import pytest

from bloomseg.model.inputs import pad_reflect, random_view, render, tile_views, training_views, whole_view


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
