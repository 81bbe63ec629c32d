"""The size head: what it reads, that it leaves the segmentation as it is, and that it
travels with the model's files."""

from __future__ import annotations

import pytest
import torch

from bloomseg.backbone.layouts import build_vit
from bloomseg.model.network import SegmentationModel
from bloomseg.model.size import SizeHead


def test_the_reading_pools_the_cells_and_the_whole_field():
    head = SizeHead(3, hidden=4)
    features = torch.zeros(2, 3, 4, 4)
    features[:, :, :2] = torch.tensor([1.0, 2.0, 3.0])[:, None, None]  # the cells' half
    cells_top = torch.zeros(2, 1, 8, 8)
    cells_top[:, :, :4] = 1.0  # the network's cells cover the top half
    captured = {}
    head.mlp[0].register_forward_hook(lambda m, i, o: captured.update(x=i[0]))
    assert head(features, cells_top).shape == (2,)
    pooled = captured["x"][0]
    # mean over the whole field, then over the cells alone (the weights pooled onto 4x4)
    torch.testing.assert_close(pooled[:3], torch.tensor([0.5, 1.0, 1.5]))
    torch.testing.assert_close(pooled[3:], torch.tensor([1.0, 2.0, 3.0]) * 8 / (8 + 1e-3))


@pytest.mark.parametrize("head", ["unet", "fusion"])
def test_a_size_head_leaves_the_logits_as_they_are(small_weights, head):
    backbone = None if head == "unet" else build_vit(small_weights)
    torch.manual_seed(0)
    model = SegmentationModel(head, backbone, out_channels=2, unet_levels=3, size_head=True).eval()
    x = torch.randn(3, 3, 56, 84)
    with torch.no_grad():
        logits, size = model.forward_sized(x)
        torch.testing.assert_close(logits, model(x))
    assert size.shape == (3,) and torch.isfinite(size).all()
    # it trains with the head, at the head's rate
    assert any(p is model.size_head.mlp[0].weight for p in model.parameter_groups(1e-3)[0]["params"])


def test_a_model_without_a_size_head_says_so():
    model = SegmentationModel("unet", unet_levels=2)
    assert model.size_head is None
    with pytest.raises(ValueError, match="no size head"):
        model.forward_sized(torch.randn(1, 3, 32, 32))
