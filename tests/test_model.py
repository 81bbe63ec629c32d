"""Backbone + head composition: shapes, freezing, fine-tuning, cached-feature path."""

from __future__ import annotations

import pytest
import torch

from bloomseg.checkpoint import build_vit
from bloomseg.model import SegmentationModel


@pytest.fixture()
def vit(small_weights):
    return build_vit(small_weights)


@pytest.mark.parametrize("head", ["linear", "transposed_conv", "fusion"])
def test_frozen_backbone_gets_no_gradient(vit, head):
    model = SegmentationModel(head, vit, out_channels=2)
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    x = torch.randn(2, 3, 56, 84)
    out = model(x)
    assert out.shape == (2, 2, 56, 84)
    out.mean().backward()
    assert all(p.grad is None for p in vit.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    opt = torch.optim.AdamW(model.parameter_groups(1e-3))
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
    assert len(model.parameter_groups(1e-3)) == 1


def test_cached_features_path_equals_forward(vit):
    model = SegmentationModel("fusion", vit).eval()
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        feats = model.features(x)
        assert [f.shape for f in feats] == [(1, 384, 4, 4)] * 4
        torch.testing.assert_close(model.forward_head(feats, x), model(x))
    assert model.layers == [2, 5, 8, 11]


def test_unfreeze_last_blocks(vit):
    model = SegmentationModel("linear", vit, unfreeze_blocks=2)
    trainable = {n for n, p in vit.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("blocks.10.", "blocks.11.", "norm.")) for n in trainable)
    assert any(n.startswith("blocks.10.") for n in trainable)
    model(torch.randn(1, 3, 28, 28)).mean().backward()
    assert vit.blocks[11].attn.qkv.weight.grad is not None and vit.blocks[9].attn.qkv.weight.grad is None
    groups = model.parameter_groups(1e-3, backbone_lr_scale=0.1)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]


def test_train_mode_keeps_backbone_in_eval(vit):
    model = SegmentationModel("transposed_conv", vit).train()
    assert model.head.training and not vit.training
    assert not any(m.training for m in vit.modules())


def test_unet_model():
    model = SegmentationModel("unet", out_channels=2)
    assert model(torch.randn(1, 3, 30, 50)).shape == (1, 2, 30, 50)
    with pytest.raises(ValueError, match="no backbone features"):
        model.features(torch.zeros(1, 3, 28, 28))


def test_bad_combinations(vit):
    with pytest.raises(ValueError, match="needs a backbone"):
        SegmentationModel("linear")
    with pytest.raises(ValueError, match="no backbone to pass"):
        SegmentationModel("unet", vit)
    with pytest.raises(ValueError, match=r"unfreeze_blocks 13 not in 0\.\.12"):
        SegmentationModel("linear", vit, unfreeze_blocks=13)
