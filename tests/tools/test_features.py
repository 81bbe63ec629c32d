"""Whole-image features: tiles stitched in the right places, and the PCA picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bloomseg.backbone.layouts import build_vit
from bloomseg.errors import ConfigError
from bloomseg.model.inputs import pad_reflect, to_tensor
from bloomseg.tools.features import (
    PCA,
    compare_modes,
    extract_features,
    pca_figure,
    pca_rgb,
    save_comparison_grid,
)


@pytest.fixture(scope="module")
def vit(small_weights):
    return build_vit(small_weights).eval()


def test_tiles_are_stitched_in_place(vit):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    feats = extract_features(vit, image, tile=224, batch_size=2)
    assert feats.shape == (384, 22, 36) and feats.dtype == np.float32
    # the 22 x 36 patch grid is cut into 2 x 3 near-equal tiles of at most 16 patches:
    # rows [0, 11), [11, 22); columns [0, 12), [12, 24), [24, 36)
    padded = to_tensor(pad_reflect(image, 308, 504))
    with torch.inference_mode():
        for r0, r1, c0, c1 in [(0, 11, 0, 12), (0, 11, 24, 36), (11, 22, 12, 24)]:
            tile = padded[..., 14 * r0:14 * r1, 14 * c0:14 * c1]
            np.testing.assert_allclose(feats[:, r0:r1, c0:c1], vit(tile)[0].numpy(), atol=1e-5)


def test_one_tile_equals_whole_image_forward(vit):
    image = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    with torch.inference_mode():
        whole = vit(to_tensor(image))[0].numpy()
    np.testing.assert_allclose(extract_features(vit, image), whole, atol=1e-5)


def test_padding_and_resize_modes(vit):
    image = np.random.default_rng(5).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    with torch.inference_mode():
        padded = vit(to_tensor(pad_reflect(image, 112, 154)))[0].numpy()
        resized = vit(to_tensor(np.asarray(Image.fromarray(image).resize((112, 112),
                                                                       Image.BILINEAR))))[0].numpy()
    got = extract_features(vit, image, "padding")
    assert got.shape == (384, 8, 11)
    np.testing.assert_allclose(got, padded, atol=1e-5)
    got = extract_features(vit, image, "resize", tile=112)
    assert got.shape == (384, 8, 8)
    np.testing.assert_allclose(got, resized, atol=1e-5)


@pytest.mark.parametrize("mode", ["tiling", "padding", "resize"])
def test_bad_mode_and_tile(vit, mode):
    with pytest.raises(ConfigError, match="multiple of 14"):
        extract_features(vit, np.zeros((10, 10, 3), np.uint8), mode, tile=100)
    with pytest.raises(ConfigError, match="mode 'tiles' is not one of"):
        extract_features(vit, np.zeros((10, 10, 3), np.uint8), "tiles")


@pytest.mark.parametrize("mode, shape", [("tiling", (1, 1)), ("padding", (1, 1)), ("resize", (16, 16))])
def test_tiny_image(vit, mode, shape):
    image = np.full((1, 1, 3), 200, dtype=np.uint8)
    assert extract_features(vit, image, mode).shape == (384, *shape)


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


def test_a_fitted_pca_colours_other_maps_the_same_way():
    rng = np.random.default_rng(6)
    feats = rng.standard_normal((16, 6, 8)).astype(np.float32)
    pca = PCA.fit(feats)
    np.testing.assert_array_equal(pca.rgb(feats), pca_rgb(feats))
    assert np.allclose(pca.components.T @ pca.components, np.eye(3))
    # the same features on another grid get the same colours, patch for patch
    np.testing.assert_array_equal(pca.rgb(feats[:, :3, :5]), pca_rgb(feats)[:3, :5])


def test_comparison_grid(vit, tmp_path):
    from conftest import tiny_vit

    image = np.random.default_rng(7).integers(0, 256, (70, 98, 3), dtype=np.uint8)
    backbones = {"small": vit, "tiny": tiny_vit()}
    results = compare_modes(backbones, image, tile=56)
    assert [(r.backbone, r.mode) for r in results] == [
        (b, m) for b in ("small", "tiny") for m in ("resize", "padding", "tiling")]
    shapes = {(r.backbone, r.mode): r.features.shape for r in results}
    assert shapes[("small", "tiling")] == (384, 5, 7) and shapes[("tiny", "resize")] == (32, 4, 4)
    assert all(r.seconds > 0 for r in results)
    path = tmp_path / "grid.png"
    save_comparison_grid(image, results, path, title="test")
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape[1] > picture.shape[0] > 100  # 2 rows x 4 columns
    assert picture.std() > 10  # not blank
