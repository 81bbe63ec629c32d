"""Heads and the U-Net: output sizes, layer choice, and that they can learn."""

from __future__ import annotations

import pytest
import torch

from bloomseg.model.heads import HEAD_CLASSES, build_head, head_layers
from bloomseg.model.unet import UNet


def _features(n, b=2, d=32, rows=5, cols=7):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(b, d, rows, cols, generator=gen) for _ in range(n)]


@pytest.mark.parametrize("name", list(HEAD_CLASSES))
@pytest.mark.parametrize("out_channels", [1, 3])
def test_output_is_input_sized(name, out_channels):
    head = build_head(name, embed_dim=32, out_channels=out_channels)
    image = torch.randn(2, 3, 70, 98)
    out = head(_features(HEAD_CLASSES[name].num_layers), image)
    assert out.shape == (2, out_channels, 70, 98)


def test_head_layers():
    assert head_layers("linear", 12) == [11]
    assert head_layers("transposed_conv", 24) == [23]
    assert head_layers("fusion", 12) == [2, 5, 8, 11]
    assert head_layers("fusion", 40) == [9, 19, 29, 39]


def test_fusion_head_uses_the_image():
    """The RGB stem reaches the output: a change in the image alone changes the logits."""
    head = build_head("fusion", embed_dim=32).eval()
    feats = _features(4, b=1)
    image = torch.randn(1, 3, 70, 98)
    changed = image.clone()
    changed[..., 30:33, 40:43] += 3.0
    with torch.no_grad():
        assert not torch.allclose(head(feats, image), head(feats, changed))


def test_unknown_head():
    with pytest.raises(ValueError, match="unknown head 'mlp'"):
        build_head("mlp", 32)


@pytest.mark.parametrize("size", [(64, 64), (1, 1), (37, 53)])
def test_unet_any_size(size):
    with torch.no_grad():  # eval: batch norm cannot train on a single 1x1 value
        assert UNet(out_channels=2).eval()(torch.randn(1, 3, *size)).shape == (1, 2, *size)


def test_unet_learns_a_colour_rule():
    """A few steps on 'cell = red pixels' must cut the loss: the model is trainable."""
    torch.manual_seed(0)
    image = torch.randn(4, 3, 32, 32)
    target = (image[:, :1] > 0.5).float()
    model = UNet(widths=(8, 16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(image), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
