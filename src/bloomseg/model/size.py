"""The network's reading of the cell size: how large the cells it is shown are, against
the size it segments at.

After cellpose's size model (a regression from the network's pooled "style"), but read
by the network itself: a small head regresses ``log(cell diameter / model's cell
diameter)`` from the deepest features, pooled twice, over the whole input and over the
pixels the network calls cell (so the share of background in a field does not move the
reading). Trained with the scale augmentation that makes the segmentation tolerant of a
size error, it tells how far an image is from the size the network works at.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SizeHead(nn.Module):
    """Pooled deep features -> log of the cells' size relative to the model's.

    Args:
        channels: channels of the feature map it reads.
        hidden: width of its hidden layer.
    """

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 1))

    def forward(self, features: Tensor, foreground: Tensor) -> Tensor:
        """Args:
            features: (B, C, h, w) the deepest feature map.
            foreground: (B, 1, H, W) cell probability (any H, W: pooled onto h x w).

        Returns:
            (B,) log(cells' diameter / the model's cell diameter).
        """
        weight = F.adaptive_avg_pool2d(foreground, features.shape[-2:])
        whole = features.mean(dim=(2, 3))
        cells = (features * weight).sum(dim=(2, 3)) / (weight.sum(dim=(2, 3)) + 1e-3)
        return self.mlp(torch.cat([whole, cells], dim=1))[:, 0]
