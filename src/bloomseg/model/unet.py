"""A small U-Net trained from scratch: the model that needs no weights file."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bloomseg.model.heads import conv_bn_relu


class UNet(nn.Module):
    """A small U-Net trained from scratch: the baseline that needs no weights file.

    Args:
        out_channels: output channels (channel 0 = cell).
        widths: channels per level, finest first; the input is padded to a multiple of
            2 ** (len(widths) - 1) and the output cropped back, so any size works.
    """

    def __init__(self, out_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        c_in = 3
        for w in widths:
            self.down.append(nn.Sequential(conv_bn_relu(c_in, w), conv_bn_relu(w, w)))
            c_in = w
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(c_in, w, 2, stride=2))
            self.merge.append(nn.Sequential(conv_bn_relu(2 * w, w), conv_bn_relu(w, w)))
            c_in = w
        self.out = nn.Conv2d(c_in, out_channels, 1)
        self.multiple = 2 ** (len(widths) - 1)
        # receptive-field radius, px: two 3x3 convolutions per level down and up, the
        # pools and the transposed convolutions, each at its level's scale
        self.reach = 2 * (2 * self.multiple - 1) + 4 * (self.multiple - 1)

    @property
    def deep_channels(self) -> int:
        """Channels of the deepest level (what a size head reads)."""
        return self.down[-1][-1][0].out_channels

    def forward(self, image: Tensor, deepest: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B, 3, H, W) normalised image -> (B, out_channels, H, W) logits; with
        ``deepest``, also the deepest level's features (B, C, H/2^(L-1), W/2^(L-1))."""
        h, w = image.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        x = F.pad(image, (0, pw, 0, ph), mode="replicate") if ph or pw else image
        skips = []
        for i, level in enumerate(self.down):
            x = level(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        deep = x
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
        logits = self.out(x)[..., :h, :w]
        return (logits, deep) if deepest else logits
