"""Flips/rotations as a numbered group, colour jitter, and the microscope augmentations."""

from __future__ import annotations

import numpy as np
import pytest

from bloomseg.model.inputs import DIHEDRAL, dihedral, dihedral_inverse
from bloomseg.train.augment import AUGMENTATIONS, PIXELWISE, ColourJitter, Microscope


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


def _smear(size: int = 64) -> np.ndarray:
    """A pale background with violet disks: something like a stained smear."""
    from bloomseg.data.synthetic import smear

    image, _ = smear(np.random.default_rng(3), size, size)
    return image


def test_microscope_draws_are_seeded_and_only_the_named_ones():
    every = Microscope()
    a, b = every.draw(np.random.default_rng(5), 0.8), every.draw(np.random.default_rng(5), 0.8)
    assert repr(a) == repr(b)
    assert Microscope(()).draw(np.random.default_rng(5), 0.8) == {}
    drawn = set()
    for seed in range(40):
        drawn |= set(every.draw(np.random.default_rng(seed), 0.8))
    assert drawn == set(AUGMENTATIONS)
    only = {k for s in range(40) for k in Microscope(("gamma", "jpeg")).draw(
        np.random.default_rng(s), 0.8)}
    assert only == {"gamma", "jpeg"}
    with pytest.raises(ValueError, match="unknown augmentations"):
        Microscope(("sharpen",))


def test_pixelwise_changes_a_crop_as_they_change_the_whole():
    image = _smear()
    for seed in range(10):
        draws = Microscope(PIXELWISE).draw(np.random.default_rng(seed), 0.7)
        whole = Microscope.pixelwise(image, draws)
        assert np.array_equal(Microscope.pixelwise(image[10:40, 5:50], draws), whole[10:40, 5:50])


def test_each_change_does_what_it_says():
    image = _smear()
    grey = Microscope.pixelwise(image, {"saturation": 0.0})
    assert np.abs(grey.astype(int) - grey[..., :1]).max() <= 1  # grey: channels equal
    flat = Microscope.pixelwise(image, {"contrast": (0.3, 0.5)})
    assert flat.std() == pytest.approx(0.3 * image.std(), rel=0.05)
    same = Microscope.pixelwise(image, {"stain": (np.ones(3, np.float32), np.zeros(3, np.float32))})
    assert np.abs(same.astype(int) - image).max() <= 1  # unmixed and mixed back unchanged
    more = Microscope.pixelwise(image, {"stain": (np.full(3, 1.3, np.float32),
                                                  np.zeros(3, np.float32))})
    assert more.mean() < image.mean() - 3  # more stain: darker cells
    dark = Microscope.pixelwise(image, {"gamma": 1.7})
    assert (dark <= image).all()
    lit = Microscope.optics(np.full((40, 40, 3), 200, np.uint8),
                            {"illumination": (np.array([0.3, 0.0]), 0.0)})
    assert lit[0, 0, 0] < 200 < lit[-1, 0, 0]  # brighter towards the bottom
    blurred = Microscope.optics(image, {"blur": 2.0})
    assert np.abs(np.diff(blurred.astype(int), axis=1)).mean() < np.abs(
        np.diff(image.astype(int), axis=1)).mean()
    noisy = Microscope.optics(image, {"noise": (0.04, 1)})
    assert 5 < np.abs(noisy.astype(int) - image).mean() < 15
    jpeg = Microscope.optics(image, {"jpeg": 25})
    assert jpeg.shape == image.shape and not np.array_equal(jpeg, image)
