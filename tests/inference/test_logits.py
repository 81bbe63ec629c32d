"""Whole-image prediction: exact stitching and blending, sizes, windows, modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bloomseg.cells.instances import InstanceParams
from bloomseg.errors import ConfigError
from bloomseg.inference.logits import gaussian_weights, predict_logits
from bloomseg.inference.options import InferenceOptions
from bloomseg.inference.segmenter import Segmenter
from bloomseg.inference.stitch import stitched_features
from bloomseg.model.inputs import to_tensor
from bloomseg.model.network import SegmentationModel
from conftest import tiny_vit


class RedChannel(nn.Module):
    """An identity 'model': its logit is the input's normalised red channel."""

    backbone = None
    grid, reach = 14, 0  # pixel-local: any window gives the same logits
    out_channels = 1

    def forward(self, x):
        return x[:, :1]


class PatchMeans(nn.Module):
    """A patch-local stand-in for a ViT: each patch's feature is its mean colour, so
    features stitched from tiles must equal those of the whole image exactly."""

    embed_dim = 3

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Identity()])
        self.norm = nn.Identity()

    def forward_intermediates(self, x, layers):
        return [nn.functional.avg_pool2d(x, 14) for _ in layers]


def image_of(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_gaussian_weights():
    w = gaussian_weights(224, 0.125)
    assert w.shape == (224, 224)
    assert w.max() == pytest.approx(1.0, abs=1e-3) and w.min() >= 1e-4
    torch.testing.assert_close(w, w.T)
    torch.testing.assert_close(w, w.flip(0))


@pytest.mark.parametrize("strategy", ["stitch", "blend"])
@pytest.mark.parametrize("size", [(1, 1), (13, 29), (224, 224), (250, 333)])
def test_identity_model_comes_back_through_tiling(strategy, size):
    image = image_of(*size)
    opts = InferenceOptions(tile=56, strategy=strategy, overlap=0.5, window=224)
    with torch.no_grad():
        out = predict_logits(RedChannel(), image, opts)
    torch.testing.assert_close(out, to_tensor(image)[0, :1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("context", [0, 1])
def test_stitched_features_equal_whole_image_features(context):
    model = SegmentationModel("linear", PatchMeans())
    x = to_tensor(image_of(14 * 37, 14 * 23))
    names = []

    def source(tile_names, tiles):
        names.extend(tile_names)
        return model.features(tiles)

    with torch.no_grad():
        stitched = stitched_features(source, x, tile=70, context=context, batch_size=3)
        whole = model.features(x)
    torch.testing.assert_close(stitched[0], whole[0], rtol=0, atol=0)
    assert len(names) == len(set(names)) == (8 * 5 if context == 0 else 13 * 8)
    assert names[0] == ("s0_0_5x5" if context == 0 else "s0_0_4x4")


@pytest.mark.parametrize("head", ["linear", "unet"])
def test_windows_agree_with_one_window(head):
    """A ViT's features depend on where tiles are cut, so a patch-local backbone checks
    the windows themselves: windowed and whole-image logits must agree."""
    model = SegmentationModel(head, PatchMeans() if head != "unet" else None).eval()
    image = image_of(500, 620)
    with torch.no_grad():
        small = predict_logits(model, image, InferenceOptions(tile=56, window=224))
        large = predict_logits(model, image, InferenceOptions(tile=56, window=4480))
        whole = model(to_tensor(np.pad(image, ((0, 4), (0, 10), (0, 0)), mode="reflect")))
    torch.testing.assert_close(small, large, rtol=1e-4, atol=1e-4)
    if head == "linear":
        torch.testing.assert_close(small, whole[0, :, :500, :620], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["tiling", "padding", "resize"])
@pytest.mark.parametrize("size", [(1, 1), (50, 71)])
def test_every_mode_returns_the_image_size(mode, size):
    model = SegmentationModel("fusion", tiny_vit(), out_channels=2).eval()
    with torch.no_grad():
        for tta in (False, True):
            logits = predict_logits(model, image_of(*size), InferenceOptions(mode, 42, tta=tta))
            assert logits.shape == (2, *size) and torch.isfinite(logits).all()


def test_tta_of_a_mirror_symmetric_model_changes_nothing():
    image = image_of(40, 60)
    with torch.no_grad():
        plain = predict_logits(RedChannel(), image, InferenceOptions(tile=42))
        tta = predict_logits(RedChannel(), image, InferenceOptions(tile=42, tta=True))
    torch.testing.assert_close(plain, tta)


def test_unet_runs_on_whole_windows():
    model = SegmentationModel("unet").eval()
    image = image_of(70, 84)  # whole patches: nothing padded
    with torch.no_grad():
        torch.testing.assert_close(predict_logits(model, image, InferenceOptions(tile=56)),
                                   model(to_tensor(image))[0])


def test_invalid_options_are_named():
    for bad, message in ((dict(strategy="magic"), "strategy"), (dict(overlap=1.0), "overlap"),
                         (dict(tile=50), "tile"), (dict(context=8), "context")):
        with pytest.raises(ConfigError, match=message):
            InferenceOptions(**bad).check()


def test_segmenter_probability_and_mask():
    segmenter = Segmenter(SegmentationModel("linear", tiny_vit()), InferenceOptions(tile=42),
                          threshold=0.5)
    result = segmenter.predict(image_of(31, 45))
    assert result.probability.shape == result.mask.shape == (31, 45)
    assert ((result.probability > 0.5) == result.mask).all()
    assert 0 <= result.probability.min() and result.probability.max() <= 1


def test_slivers_are_dropped_at_the_image_edge_only():
    yy, xx = np.mgrid[:60, :100]
    whole = (yy - 30) ** 2 + (xx - 50) ** 2 <= 15 ** 2
    sliver = (yy - 30) ** 2 + (xx + 8) ** 2 <= 15 ** 2  # a cell cut by the left edge
    image = np.zeros((60, 100, 3), np.uint8)
    image[whole | sliver, 0] = 255  # the red channel is the logit
    segmenter = Segmenter(RedChannel(), separation=InstanceParams("distance", 5, 1.0, 20,
                                                                 edge_min_area=300))
    result = segmenter.predict(image, instances=True)
    assert ((result.probability > 0.5) == (whole | sliver)).all()
    assert (result.mask == whole).all() and result.labels.max() == 1
    assert segmenter.predict(image).labels is None
    # the same pixels as a block whose left side is not the image's edge keep the sliver
    block = segmenter.predict(image, edges=(True, True, False, True))
    assert (block.mask == (whole | sliver)).all()
