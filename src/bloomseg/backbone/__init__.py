"""The frozen feature extractor: DinoBloom (or DINOv2) vision transformers from local files.

``vit`` holds the network, ``layouts`` reads every published weights layout into it, and
``registry`` names the weights, caches them and downloads them on request. Importing this
package does not import torch; :func:`load_backbone` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bloomseg.backbone.registry import cached_path, get_entry
from bloomseg.errors import WeightsError

if TYPE_CHECKING:
    import torch

    from bloomseg.backbone.vit import DinoVisionTransformer

PATCH_SIZE = 14
"""Side of one ViT patch in pixels (all DinoBloom and DINOv2 /14 models)."""

TRAIN_SIZE = 224
"""Tile side DinoBloom was trained at: a 16x16 patch grid."""

__all__ = ["PATCH_SIZE", "TRAIN_SIZE", "load_backbone", "resolve_weights"]


def resolve_weights(name: str, weights: str | Path | None = None) -> Path:
    """The weights file for backbone ``name``: ``weights`` if given, else the cached file.

    Raises:
        WeightsError: the file is not there; the message says how to get it.
    """
    entry = get_entry(name)
    path = Path(weights) if weights is not None else cached_path(name)
    if not path.is_file():
        where = "" if weights is not None else " (the bloomseg cache; set BLOOMSEG_HOME to move it)"
        raise WeightsError(
            f"{path}: no weights file for {entry.name}{where}. Run `bloomseg weights download "
            f"{entry.name}`, or download {entry.url} by hand and pass --weights PATH."
        )
    return path


def load_backbone(name: str = "dinobloom-s", weights: str | Path | None = None,
                  device: str | torch.device = "cpu") -> DinoVisionTransformer:
    """Load a frozen, eval-mode DinoBloom/DINOv2 backbone, offline.

    Args:
        name: registry name, ``dinobloom-s|b|l|g`` or ``dinov2-s|b|l|g``.
        weights: a weights file in any published layout; default the cached download.
        device: where to put the model.

    Returns:
        A module mapping an ImageNet-normalised (B, 3, H, W) tensor, H and W multiples
        of 14, to patch features (B, D, H/14, W/14).

    Raises:
        WeightsError: missing, unsafe, damaged, or holding another architecture than ``name``.
    """
    from bloomseg.backbone.layouts import load_vit
    from bloomseg.backbone.vit import ARCHS

    entry = get_entry(name)
    path = resolve_weights(name, weights)
    model, info = load_vit(path)
    expected = ARCHS[entry.arch]
    if info.config.name != expected.name:
        raise WeightsError(
            f"{path}: holds a {info.config.name} (width {info.config.embed_dim}) but "
            f"{entry.name} is a {expected.name} (width {expected.embed_dim})"
        )
    model.requires_grad_(False)
    return model.eval().to(device)
