"""Whole-image logits in every mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bloomseg.model import SegmentationModel
from bloomseg.predict import predict_logits
from bloomseg.preprocess import to_tensor
from conftest import tiny_vit


@pytest.fixture()
def image():
    return np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["tiling", "padding", "resize"])
def test_logits_have_the_image_size(image, mode):
    model = SegmentationModel("fusion", tiny_vit(), out_channels=2).eval()
    with torch.no_grad():
        logits = predict_logits(model, image, mode, tile=42)
    assert logits.shape == (2, 50, 70)
    assert torch.isfinite(logits).all()


def test_tiling_stitches_tiles_in_place(image):
    model = SegmentationModel("linear", tiny_vit()).eval()
    padded = np.pad(image, ((0, 34), (0, 14), (0, 0)), mode="reflect")  # a 2x2 grid of 42
    with torch.no_grad():
        logits = predict_logits(model, image, "tiling", tile=42)
        corner = model(to_tensor(np.ascontiguousarray(padded[42:84, 42:84])))[0]
    torch.testing.assert_close(logits[:, 42:50, 42:70], corner[:, :8, :28])


def test_unet_runs_on_the_whole_image(image):
    model = SegmentationModel("unet").eval()
    with torch.no_grad():
        torch.testing.assert_close(predict_logits(model, image, "tiling", 42),
                                   model(to_tensor(image))[0])


def test_features_source_is_used(image):
    model = SegmentationModel("linear", tiny_vit()).eval()
    calls = []

    def source(names, x):
        calls.append(names)
        return model.features(x)

    with torch.no_grad():
        predict_logits(model, image, "tiling", tile=42, batch_size=3, features=source)
    assert calls == [["g42_0_0", "g42_0_42", "g42_42_0"], ["g42_42_42"]]
