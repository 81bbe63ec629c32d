"""Segmentation heads over ViT patch features.

A head maps the backbone's feature maps (each (B, D, H/14, W/14)) and the normalised
input image (B, 3, H, W) to logits (B, out_channels, H, W). Channel 0 is "cell"; more
channels are free for other targets (the instance work adds a cell-centre map).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bloomseg.model.config import HEADS


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(
        x, size=size, mode="bilinear", align_corners=False)


class LinearHead(nn.Module):
    """1x1 projection of the last layer, bilinearly upsampled: the linear probe."""

    num_layers = 1

    def __init__(self, embed_dim: int, out_channels: int = 1) -> None:
        super().__init__()
        self.proj = nn.Conv2d(embed_dim, out_channels, 1)

    def forward(self, features: list[Tensor], image: Tensor) -> Tensor:
        return _resize(self.proj(features[-1]), image.shape[-2:])


class TransposedConvHead(nn.Module):
    """The reference head: 1x1 to 256, four x2 transposed-conv stages (256-128-64-32)
    each followed by conv+BN+ReLU, a final 1x1 conv, resized to the input."""

    num_layers = 1

    def __init__(self, embed_dim: int, out_channels: int = 1) -> None:
        super().__init__()
        self.proj = nn.Conv2d(embed_dim, 256, 1)
        stages, c_in = [], 256
        for c_out in (256, 128, 64, 32):
            stages += [nn.ConvTranspose2d(c_in, c_out, 2, stride=2), conv_bn_relu(c_out, c_out)]
            c_in = c_out
        self.up = nn.Sequential(*stages)
        self.out = nn.Conv2d(32, out_channels, 1)

    def forward(self, features: list[Tensor], image: Tensor) -> Tensor:
        return _resize(self.out(self.up(self.proj(features[-1]))), image.shape[-2:])


class FusionHead(nn.Module):
    """Several ViT layers fused at the patch grid, refined with a shallow RGB stem.

    The 14 px patch grid cannot place a cell border to the pixel; the image can. Four
    ViT layers (from edges to semantics) are projected and fused at 1/14, upsampled to
    1/4 and joined with RGB features computed at 1/4, then to full resolution and joined
    with the RGB pixels themselves. The layers are kept narrow, most of all at full
    resolution: with cached backbone features the head is all a training step costs.
    """

    num_layers = 4

    def __init__(self, embed_dim: int, out_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(embed_dim, width, 1) for _ in range(self.num_layers))
        self.fuse = conv_bn_relu(width * self.num_layers, width)
        self.stem_quarter = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.refine_quarter = conv_bn_relu(width + 16, 32)
        self.refine_full = conv_bn_relu(32 + 3, 16)  # the RGB itself is the full-res stem
        self.out = nn.Conv2d(16, out_channels, 1)

    def forward(self, features: list[Tensor], image: Tensor) -> Tensor:
        if len(features) != self.num_layers:
            raise ValueError(f"FusionHead needs {self.num_layers} feature maps, got {len(features)}")
        x = self.fuse(torch.cat([p(f) for p, f in zip(self.proj, features)], dim=1))
        quarter = self.stem_quarter(image)
        x = self.refine_quarter(torch.cat([_resize(x, quarter.shape[-2:]), quarter], dim=1))
        x = self.refine_full(torch.cat([_resize(x, image.shape[-2:]), image], dim=1))
        return self.out(x)


HEAD_CLASSES: dict[str, type[nn.Module]] = dict(zip(HEADS, (LinearHead, TransposedConvHead,
                                                           FusionHead)))


def head_layers(name: str, depth: int) -> list[int]:
    """Which backbone blocks a head reads: the last one, or evenly spaced up to the last."""
    n = HEAD_CLASSES[name].num_layers
    return [depth - 1 - (depth // n) * (n - 1 - i) for i in range(n)]


def build_head(name: str, embed_dim: int, out_channels: int = 1) -> nn.Module:
    """A head by name (``linear``, ``transposed_conv``, ``fusion``)."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose from {', '.join(HEADS)}")
    return HEAD_CLASSES[name](embed_dim, out_channels)
