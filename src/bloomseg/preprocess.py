"""Image normalisation shared by every backbone: the one place for these constants."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""DINOv2 and DinoBloom were trained on ImageNet-normalised RGB."""


def to_tensor(image: np.ndarray) -> Tensor:
    """RGB uint8 image -> ImageNet-normalised float tensor.

    Args:
        image: (H, W, 3) uint8.

    Returns:
        (1, 3, H, W) float32.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    image = np.require(image, requirements=["C", "W"])  # copies read-only (memory-mapped) input
    x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)
