"""The ViT against the DINOv2 layout and an independent functional re-computation."""

from __future__ import annotations

import pytest
import torch

from bloomseg.backbone.layouts import build_vit
from bloomseg.backbone.vit import ARCHS, DinoVisionTransformer, ViTConfig, pad_to_patch_multiple
from conftest import SPECS, dinov2_shapes, reference_features


@pytest.mark.parametrize("arch", list(SPECS))
def test_state_dict_names_and_shapes_are_dinov2s(arch):
    with torch.device("meta"):
        model = DinoVisionTransformer(ARCHS[arch])
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == dinov2_shapes(arch)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * ARCHS[arch].depth + 1
    assert all(m.eps == 1e-6 for m in norms)  # DINOv2's LayerNorm eps, too small to see in outputs


@pytest.mark.parametrize("arch, count", [
    # counted by hand from the DINOv2 shapes at DinoBloom's 16x16 grid (published: 22M/86M/304M/1.1B)
    ("vit_small", 21_629_184), ("vit_base", 85_725_696),
    ("vit_large", 303_228_928), ("vit_giant2", 1_134_771_200),
])
def test_parameter_counts(arch, count):
    with torch.device("meta"):
        n = sum(p.numel() for p in DinoVisionTransformer(ARCHS[arch]).parameters())
    assert n == count


@pytest.mark.parametrize("size", [(224, 224), (448, 448), (224, 336), (336, 224), (28, 70)])
def test_forward_equals_reference_maths(small_weights, size):
    model = build_vit(small_weights).eval()
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        got = model(x)
        want = reference_features(small_weights, x, heads=6)
    assert got.shape == (2, 384, size[0] // 14, size[1] // 14)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)


def test_every_block_matters(small_weights):
    """Zeroing one block's LayerScale must change the output (the weights exercise all blocks)."""
    model = build_vit(small_weights).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        base = model(x)
        for block in (model.blocks[0], model.blocks[-1]):
            saved = block.ls2.gamma.clone()
            block.ls2.gamma.zero_()
            assert (model(x) - base).abs().max() > 1e-2
            block.ls2.gamma.copy_(saved)


def test_pos_embed_unchanged_at_training_grid(small_weights):
    model = build_vit(small_weights)
    assert model.interpolate_pos_embed(16, 16) is model.pos_embed
    resized = model.interpolate_pos_embed(32, 32)
    assert resized.shape == (1, 1 + 32 * 32, 384)
    torch.testing.assert_close(resized[:, 0], model.pos_embed[:, 0])
    assert model.interpolate_pos_embed(16, 24).shape == (1, 1 + 16 * 24, 384)


def test_intermediate_layers(small_weights):
    model = build_vit(small_weights).eval()
    x = torch.randn(1, 3, 224, 336)
    with torch.inference_mode():
        maps = model.forward_intermediates(x, [3, -1, 0])
        last = model(x)
    assert [m.shape for m in maps] == [(1, 384, 16, 24)] * 3
    torch.testing.assert_close(maps[1], last)
    assert not torch.allclose(maps[0], maps[2])
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, [12])


def test_swiglu_block_matches_reference():
    """SwiGLU (the G feed-forward) on a two-block model small enough to run here."""
    cfg = ViTConfig("tiny_swiglu", embed_dim=64, depth=2, num_heads=1, ffn="swiglu", grid=4)
    model = DinoVisionTransformer(cfg).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    assert sd["blocks.0.mlp.w12.weight"].shape == (2 * cfg.ffn_hidden, 64)
    assert cfg.ffn_hidden == 176  # DINOv2: (int(256 * 2 / 3) + 7) // 8 * 8
    x = torch.randn(1, 3, 56, 56, generator=gen)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference_features(sd, x, heads=1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", [(225, 224), (100, 200), (13, 13)])
def test_sizes_not_multiple_of_14_get_a_clear_error(small_weights, size):
    model = build_vit(small_weights)
    with pytest.raises(ValueError, match="multiple of the patch size 14.*pad"):
        model(torch.zeros(1, 3, *size))


@pytest.mark.parametrize("size, want", [((225, 224), (238, 224)), ((1, 1), (14, 14)),
                                        ((5, 30), (14, 42)), ((28, 28), (28, 28))])
def test_pad_to_patch_multiple(size, want):
    x = torch.rand(1, 3, *size)
    y = pad_to_patch_multiple(x)
    assert y.shape[-2:] == want
    torch.testing.assert_close(y[..., : size[0], : size[1]], x)  # the image itself is untouched


def test_wrong_channel_count_is_rejected(small_weights):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        build_vit(small_weights)(torch.zeros(1, 4, 224, 224))
