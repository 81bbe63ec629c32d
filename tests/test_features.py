"""Whole-image features: tiles stitched in the right places, and the PCA picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bloomseg.checkpoint import build_vit
from bloomseg.features import extract_features, pca_figure, pca_rgb
from bloomseg.preprocess import to_tensor
from bloomseg.vit import pad_to_patch_multiple


@pytest.fixture(scope="module")
def vit(small_weights):
    return build_vit(small_weights).eval()


def test_tiles_are_stitched_in_place(vit):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    feats = extract_features(vit, image, tile=224, batch_size=3)
    assert feats.shape == (384, 22, 36) and feats.dtype == np.float32
    padded = pad_to_patch_multiple(to_tensor(image), 224)
    assert padded.shape[-2:] == (448, 672)
    with torch.inference_mode():
        for r, c in [(0, 0), (0, 2), (1, 1)]:
            tile = padded[..., 224 * r: 224 * (r + 1), 224 * c: 224 * (c + 1)]
            want = vit(tile)[0].numpy()
            got = feats[:, 16 * r: 16 * (r + 1), 16 * c: 16 * (c + 1)]
            np.testing.assert_allclose(got, want[:, : got.shape[1], : got.shape[2]], atol=1e-5)


def test_one_tile_equals_whole_image_forward(vit):
    image = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    with torch.inference_mode():
        whole = vit(to_tensor(image))[0].numpy()
    np.testing.assert_allclose(extract_features(vit, image), whole, atol=1e-5)


def test_tiny_image(vit):
    image = np.full((1, 1, 3), 200, dtype=np.uint8)
    assert extract_features(vit, image).shape == (384, 1, 1)


def test_bad_tile_size(vit):
    with pytest.raises(ValueError, match="multiple of 14"):
        extract_features(vit, np.zeros((10, 10, 3), np.uint8), tile=100)


def test_pca_separates_two_regions():
    rng = np.random.default_rng(2)
    feats = 0.01 * rng.standard_normal((16, 6, 8)).astype(np.float32)
    feats[0, :, :4] += 5.0  # left half differs along one feature direction
    rgb = pca_rgb(feats)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    left, right = rgb[:, :4, 0].astype(int), rgb[:, 4:, 0].astype(int)
    assert abs(left.mean() - right.mean()) > 200  # first component = the split
    np.testing.assert_array_equal(rgb, pca_rgb(feats.copy()))  # reproducible


def test_pca_with_fewer_than_three_channels():
    feats = np.random.default_rng(3).standard_normal((2, 4, 4)).astype(np.float32)
    rgb = pca_rgb(feats)
    assert rgb.shape == (4, 4, 3) and (rgb[..., 2] == 0).all()


def test_pca_figure_size():
    image = np.zeros((30, 50, 3), np.uint8)
    figure = pca_figure(image, np.random.default_rng(4).standard_normal((8, 3, 4)).astype(np.float32))
    assert figure.shape == (30, 100, 3)
    np.testing.assert_array_equal(figure[:, :50], image)
