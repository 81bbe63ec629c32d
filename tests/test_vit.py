"""The ViT against the DINOv2 layout and an independent functional re-computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bloomseg.checkpoint import build_vit
from bloomseg.vit import ARCHS, DinoVisionTransformer, ViTConfig, pad_to_patch_multiple
from conftest import SPECS, dinov2_shapes


def reference_features(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> torch.Tensor:
    """DINOv2's forward written out with explicit tensor maths (no bloomseg code).

    Patch conv, CLS, position embedding (bicubic with DINOv2's +0.1 scale-factor trick),
    pre-norm blocks with softmax attention and LayerScale, final LayerNorm.
    """
    b, _, h, w = x.shape
    dim = sd["cls_token"].shape[-1]
    rows, cols = h // 14, w // 14
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14)
    t = torch.cat([sd["cls_token"].expand(b, 1, dim), t.flatten(2).transpose(1, 2)], dim=1)
    pos = sd["pos_embed"]
    m = math.isqrt(pos.shape[1] - 1)
    if (rows, cols) != (m, m):
        grid = pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / m, (cols + 0.1) / m), mode="bicubic")
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)], dim=1)
    t = t + pos
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    hd = dim // heads
    for i in range(depth):
        p = f"blocks.{i}."
        y = F.layer_norm(t, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = (y @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]).reshape(b, -1, 3, heads, hd)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v
        att = att.transpose(1, 2).reshape(b, -1, dim)
        t = t + sd[p + "ls1.gamma"] * (att @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"])
        y = F.layer_norm(t, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        if p + "mlp.w12.weight" in sd:
            gate, value = (y @ sd[p + "mlp.w12.weight"].T + sd[p + "mlp.w12.bias"]).chunk(2, dim=-1)
            y = (F.silu(gate) * value) @ sd[p + "mlp.w3.weight"].T + sd[p + "mlp.w3.bias"]
        else:
            y = F.gelu(y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
            y = y @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        t = t + sd[p + "ls2.gamma"] * y
    t = F.layer_norm(t, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return t[:, 1:].transpose(1, 2).reshape(b, dim, rows, cols)


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
