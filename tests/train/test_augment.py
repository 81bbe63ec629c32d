"""Flips/rotations as a numbered group, and colour jitter."""

from __future__ import annotations

import numpy as np
import pytest

from bloomseg.model.inputs import DIHEDRAL, dihedral, dihedral_inverse
from bloomseg.train.augment import ColourJitter


@pytest.fixture()
def image():
    return np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def test_eight_distinct_variants_each_undone(image):
    variants = [dihedral(image, k) for k in range(DIHEDRAL)]
    assert len({v.tobytes() + bytes(v.shape) for v in variants}) == 8
    for k, v in enumerate(variants):
        np.testing.assert_array_equal(dihedral(v, dihedral_inverse(k)), image)
    assert variants[0] is not image and np.array_equal(variants[0], image)
    np.testing.assert_array_equal(dihedral(image, 1), np.rot90(image))
    np.testing.assert_array_equal(dihedral(image, 4), image[:, ::-1])


def test_image_and_mask_move_together(image):
    mask = image[..., 0] > 128
    for k in range(DIHEDRAL):
        np.testing.assert_array_equal(dihedral(image, k)[..., 0] > 128, dihedral(mask, k))


def test_bad_index(image):
    with pytest.raises(ValueError, match="not in 0..7"):
        dihedral(image, 8)


def test_jitter_off_is_identity(image):
    off = ColourJitter(brightness=0, contrast=0, saturation=0, hue=0)
    np.testing.assert_array_equal(off(image, np.random.default_rng(1)), image)


def test_jitter_changes_colour_within_bounds(image):
    out = ColourJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)(image, np.random.default_rng(2))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).mean() > 1
    jitter = ColourJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
    again = jitter(image, np.random.default_rng(2))
    np.testing.assert_array_equal(out, again)  # seeded


def test_hue_and_saturation_leave_grey_grey():
    grey = np.full((4, 4, 3), 120, np.uint8)
    out = ColourJitter(brightness=0, contrast=0, saturation=0.5, hue=0.25)(grey, np.random.default_rng(3))
    assert np.abs(out.astype(int) - 120).max() <= 1


def test_hue_rotation_keeps_luma_and_turns_red_to_cyan():
    from bloomseg.train.augment import _grey, _rotate_hue

    red = np.array([[[0.8, 0.2, 0.2]]], np.float32)
    half = _rotate_hue(red, 0.5)[0, 0]
    assert half[0] < 0.5 and half[1] > 0.2 and half[2] > 0.2  # towards the opponent colour
    np.testing.assert_allclose(_grey(_rotate_hue(red, 0.3)), _grey(red), atol=1e-5)
    np.testing.assert_allclose(_rotate_hue(red, 1.0), red, atol=1e-5)
