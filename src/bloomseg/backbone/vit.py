"""A DINOv2-compatible vision transformer in plain PyTorch.

Parameter names, shapes and maths follow the original DINOv2 ``DinoVisionTransformer``
(facebookresearch/dinov2), so DinoBloom and DINOv2 checkpoints load with ``strict=True``
after :func:`bloomseg.backbone.layouts.remap_state_dict`:

``cls_token``, ``pos_embed``, ``mask_token``, ``patch_embed.proj.*``,
``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.*,ls2.gamma}``, ``norm.*``
where ``mlp.*`` is ``fc1``/``fc2`` (GELU MLP, S/B/L) or ``w12``/``w3`` (SwiGLU, G).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bloomseg.backbone import PATCH_SIZE, TRAIN_SIZE

# DINOv2 adds this to the target grid before turning it into a scale factor for the
# bicubic resampling of the position embedding; reproduced so features match bit for bit.
_INTERPOLATE_OFFSET = 0.1


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of one DINOv2 ViT.

    Attributes:
        name: short architecture name (``vit_small`` ...).
        embed_dim: token width D.
        depth: number of transformer blocks.
        num_heads: attention heads (head width is 64 in every DINOv2 model).
        ffn: ``"mlp"`` (GELU MLP) or ``"swiglu"`` (DINOv2's fused SwiGLU).
        grid: side of the square position-embedding grid stored in the weights
            (16 for DinoBloom's 224 px, 37 for DINOv2's 518 px hub weights).
        mlp_ratio: hidden width of the feed-forward layer relative to D.
    """

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str = "mlp"
    grid: int = TRAIN_SIZE // PATCH_SIZE
    mlp_ratio: float = 4.0

    @property
    def ffn_hidden(self) -> int:
        """Hidden width of the feed-forward layer, as DINOv2 computes it."""
        hidden = int(self.embed_dim * self.mlp_ratio)
        if self.ffn == "swiglu":
            # DINOv2's SwiGLUFFNFused keeps the parameter count of a 4x MLP and rounds to 8.
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden

    def with_grid(self, grid: int) -> ViTConfig:
        """The same architecture with another position-embedding grid."""
        return replace(self, grid=grid)


ARCHS: dict[str, ViTConfig] = {
    "vit_small": ViTConfig("vit_small", 384, 12, 6),
    "vit_base": ViTConfig("vit_base", 768, 12, 12),
    "vit_large": ViTConfig("vit_large", 1024, 24, 16),
    "vit_giant2": ViTConfig("vit_giant2", 1536, 40, 24, ffn="swiglu"),
}
"""The four DINOv2 sizes, S/B/L/G, that DinoBloom fine-tuned."""


class PatchEmbed(nn.Module):
    """Non-overlapping 14x14 patches projected to D channels."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=PATCH_SIZE, stride=PATCH_SIZE)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, H/14 * W/14, D), row-major over the patch grid."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a packed qkv projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        # qkv output is laid out as (3, heads, head_dim) along the last axis.
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """GELU feed-forward layer (S/B/L)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """SwiGLU feed-forward layer (G), with DINOv2's packed ``w12`` = [gate; value]."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, cfg.num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        ffn = SwiGLU if cfg.ffn == "swiglu" else Mlp
        self.mlp = ffn(dim, cfg.ffn_hidden)
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT returning patch-feature maps.

    Args:
        cfg: the architecture; see :data:`ARCHS`.

    Call it on an ImageNet-normalised (B, 3, H, W) tensor whose sides are multiples of
    14 (see :func:`pad_to_patch_multiple`); it returns the final-norm patch features as
    a (B, D, H/14, W/14) map. :meth:`forward_intermediates` returns several layers.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.grid * cfg.grid, dim))
        # Used by DINOv2's masked-image training only; kept so checkpoints load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def interpolate_pos_embed(self, rows: int, cols: int) -> Tensor:
        """Position embedding for a rows x cols patch grid, CLS first.

        Returns the stored embedding unchanged for the stored square grid; otherwise
        resamples the patch part bicubically exactly as DINOv2 does.

        Returns:
            (1, 1 + rows * cols, D) tensor.
        """
        grid = self.cfg.grid
        if rows == grid and cols == grid:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        patch_pos = patch_pos.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        scale = ((rows + _INTERPOLATE_OFFSET) / grid, (cols + _INTERPOLATE_OFFSET) / grid)
        patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic")
        if patch_pos.shape[-2:] != (rows, cols):  # guards the offset trick, never expected
            raise RuntimeError(f"position grid {tuple(patch_pos.shape[-2:])} != {(rows, cols)}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([cls_pos, patch_pos], dim=1).to(self.pos_embed.dtype)

    def _tokens(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) image tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % PATCH_SIZE or w % PATCH_SIZE or h == 0 or w == 0:
            raise ValueError(
                f"image size {h}x{w} is not a positive multiple of the patch size {PATCH_SIZE}: "
                "pad it first, e.g. with bloomseg.backbone.vit.pad_to_patch_multiple"
            )
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.interpolate_pos_embed(h // PATCH_SIZE, w // PATCH_SIZE)

    def forward_intermediates(self, x: Tensor, layers: Sequence[int]) -> list[Tensor]:
        """Patch features of several blocks, each passed through the final norm.

        This is DINOv2's ``get_intermediate_layers(..., reshape=True, norm=True)``.

        Args:
            x: (B, 3, H, W) normalised images, H and W multiples of 14.
            layers: block indices, 0-based; negative counts from the end (-1 = last).

        Returns:
            One (B, D, H/14, W/14) map per entry of ``layers``, in that order.
        """
        depth = len(self.blocks)
        wanted = []
        for layer in layers:
            if not -depth <= layer < depth:
                raise ValueError(f"layer {layer} out of range for a {depth}-block ViT")
            wanted.append(layer % depth)
        rows, cols = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        tokens = self._tokens(x)
        found: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks[: max(wanted) + 1]):
            tokens = block(tokens)
            if i in wanted:
                patches = self.norm(tokens)[:, 1:]
                found[i] = patches.transpose(1, 2).reshape(x.shape[0], -1, rows, cols)
        return [found[i] for i in wanted]

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> last-layer patch features (B, D, H/14, W/14)."""
        return self.forward_intermediates(x, [-1])[0]


def pad_to_patch_multiple(x: Tensor, multiple: int = PATCH_SIZE) -> Tensor:
    """Pad the bottom and right of (B, C, H, W) up to multiples of ``multiple``.

    Reflection where the image is large enough, edge replication otherwise, so the
    padding looks like smear rather than a hard border.

    Returns:
        (B, C, H', W') with H' = ceil(H / multiple) * multiple (at least ``multiple``).
    """
    h, w = x.shape[-2:]
    ph = max(1, math.ceil(h / multiple)) * multiple - h
    pw = max(1, math.ceil(w / multiple)) * multiple - w
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
