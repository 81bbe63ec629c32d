"""Backbone patch features of whole images: stitched tiles, the three input modes, and
their PCA pictures (one image, or the mode x backbone comparison grid)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from bloomseg.preprocess import to_tensor
from bloomseg.views import MODES, chunks, pad_reflect, render, whole_view
from bloomseg.vit import PATCH_SIZE, TRAIN_SIZE

FeatureSource = Callable[[list[str], Tensor], list[Tensor]]
"""(tile names, (B, 3, h, w) normalised tiles) -> feature maps (B, D, h/14, w/14), one
or more; lets training read cached features instead of running the backbone."""


def stitched_features(source: FeatureSource, x: Tensor, tile: int = TRAIN_SIZE, context: int = 0,
                      batch_size: int = 8, origin: tuple[int, int] = (0, 0)) -> list[Tensor]:
    """Feature maps of a whole region, each patch computed once, from tiles of at most
    ``tile`` px.

    The patch grid is cut into near-equal cores of at most tile/14 - 2*context patches;
    each goes through the backbone with ``context`` patches around it, and the cores
    are stitched. Tiles of one shape are batched together.

    Args:
        source: computes the feature maps of a batch of tiles.
        x: (1, 3, h, w) normalised region, h and w multiples of 14.
        tile: largest tile side in px, a multiple of 14.
        context: patches of context around each core.
        batch_size: tiles per ``source`` call.
        origin: the region's top-left patch in the image; tile names are
            ``s{row}_{col}_{rows}x{cols}`` in image patches, so they are stable keys.

    Returns:
        The maps, each (1, D, h/14, w/14).
    """
    gh, gw = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
    core, c = tile // PATCH_SIZE - 2 * context, context
    jobs = []  # (core box, tile box) in patches of the region
    for r0, r1 in chunks(gh, core):
        for c0, c1 in chunks(gw, core):
            jobs.append(((r0, r1, c0, c1), (max(0, r0 - c), min(gh, r1 + c),
                                             max(0, c0 - c), min(gw, c1 + c))))
    by_shape: dict[tuple[int, int], list] = {}
    for job in jobs:
        y0, y1, x0, x1 = job[1]
        by_shape.setdefault((y1 - y0, x1 - x0), []).append(job)
    out: list[Tensor] = []
    p = PATCH_SIZE
    for group in by_shape.values():
        for start in range(0, len(group), batch_size):
            batch = group[start:start + batch_size]
            crops = torch.cat([x[..., y0 * p:y1 * p, x0 * p:x1 * p] for _, (y0, y1, x0, x1) in batch])
            names = [f"s{origin[0] + y0}_{origin[1] + x0}_{y1 - y0}x{x1 - x0}"
                     for _, (y0, y1, x0, x1) in batch]
            maps = source(names, crops)
            if not out:
                out = [m.new_zeros((1, m.shape[1], gh, gw)) for m in maps]
            for i, ((r0, r1, c0, c1), (y0, _, x0, _)) in enumerate(batch):
                for full, m in zip(out, maps):
                    full[0, :, r0:r1, c0:c1] = m[i, :, r0 - y0:r1 - y0, c0 - x0:c1 - x0]
    return out


def extract_features(backbone: nn.Module, image: np.ndarray, mode: str = "tiling",
                     tile: int = TRAIN_SIZE, batch_size: int = 8) -> np.ndarray:
    """Patch features of a whole image as the segmentation models see it.

    Args:
        backbone: a module mapping (B, 3, h, w) to (B, D, h/14, w/14).
        image: (H, W, 3) uint8 RGB.
        mode: ``tiling`` (tiles of at most ``tile`` px, stitched, as ``bloomseg predict``
            runs), ``padding`` (one pass over the image padded to a multiple of 14) or
            ``resize`` (one pass over the image resized to tile x tile).
        tile: tile side, or the resized side, in px; a multiple of 14.
        batch_size: tiles per backbone call.

    Returns:
        float32 (D, ceil(H/14), ceil(W/14)); patch (i, j) covers pixels
        [14i, 14i+14) x [14j, 14j+14). ``resize``: (D, tile/14, tile/14).
    """
    if tile <= 0 or tile % PATCH_SIZE:
        raise ValueError(f"tile size {tile} must be a positive multiple of {PATCH_SIZE}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    h, w = image.shape[:2]
    gh, gw = math.ceil(h / PATCH_SIZE), math.ceil(w / PATCH_SIZE)
    device = next(backbone.parameters()).device

    def run(names: list[str], tiles: Tensor) -> list[Tensor]:
        return [backbone(tiles.to(device)).float().cpu()]

    with torch.inference_mode():
        if mode == "tiling":
            x = to_tensor(pad_reflect(image, gh * PATCH_SIZE, gw * PATCH_SIZE))
            return stitched_features(run, x, tile, batch_size=batch_size)[0][0].numpy()
        view = whole_view(h, w, mode, tile)
        maps = run([view.name], to_tensor(render(image, view, mode, tile)))[0][0]
    return (maps if mode == "resize" else maps[:, :gh, :gw]).numpy()


@dataclass(frozen=True)
class PCA:
    """Three principal components of patch features, with the colour stretch they were
    fitted with, so other feature maps can be coloured the same way.

    Attributes:
        mean: (D,) feature mean.
        components: (D, k) unit directions, k <= 3, largest variance first.
        lo, hi: (k,) 1st and 99th percentiles of the fitted projections.
    """

    mean: np.ndarray
    components: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> "PCA":
        """Fit to a (D, h, w) feature map. Component signs are fixed (largest entry
        positive), so the colours are reproducible."""
        x = torch.from_numpy(features.reshape(features.shape[0], -1).T).double()
        mean = x.mean(dim=0)
        x = x - mean
        _, vectors = torch.linalg.eigh(x.T @ x)
        top = vectors[:, -3:].flip(1)  # eigh sorts ascending
        top = top * torch.sign(top[top.abs().argmax(dim=0), torch.arange(top.shape[1])])
        lo, hi = np.percentile((x @ top).numpy(), [1, 99], axis=0)
        return cls(mean.numpy(), top.numpy(), lo, hi)

    def rgb(self, features: np.ndarray) -> np.ndarray:
        """(D, h, w) features -> (h, w, 3) uint8, each component stretched to 0-255."""
        d, h, w = features.shape
        proj = (features.reshape(d, -1).T.astype(np.float64) - self.mean) @ self.components
        rgb = np.clip((proj - self.lo) / np.maximum(self.hi - self.lo, 1e-12), 0, 1)
        if rgb.shape[1] < 3:  # fewer feature channels than colours
            rgb = np.pad(rgb, ((0, 0), (0, 3 - rgb.shape[1])))
        return (rgb.reshape(h, w, 3) * 255).round().astype(np.uint8)


def pca_rgb(features: np.ndarray) -> np.ndarray:
    """The first three principal components of a (D, h, w) map as (h, w, 3) uint8 colours."""
    return PCA.fit(features).rgb(features)


def pca_figure(image: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The image and its feature PCA side by side, at the image's size.

    Returns:
        (H, 2W, 3) uint8.
    """
    h, w = image.shape[:2]
    pca = pca_rgb(features).repeat(PATCH_SIZE, axis=0).repeat(PATCH_SIZE, axis=1)[:h, :w]
    return np.concatenate([image, pca], axis=1)


COMPARISON_MODES = ("resize", "padding", "tiling")


@dataclass
class ModeFeatures:
    """One panel of the comparison grid: a backbone's features of an image in one mode."""

    backbone: str
    mode: str
    features: np.ndarray
    seconds: float


def compare_modes(backbones: Mapping[str, nn.Module], image: np.ndarray, tile: int = TRAIN_SIZE,
                  batch_size: int = 8) -> list[ModeFeatures]:
    """Features of one image from every backbone in every input mode, timed.

    Returns:
        One entry per (backbone, mode), backbones in the given order, modes in
        ``COMPARISON_MODES`` order.
    """
    results = []
    for name, backbone in backbones.items():
        for mode in COMPARISON_MODES:
            start = time.perf_counter()
            features = extract_features(backbone, image, mode, tile, batch_size)
            results.append(ModeFeatures(name, mode, features, time.perf_counter() - start))
    return results


def save_comparison_grid(image: np.ndarray, results: list[ModeFeatures], path: str | Path,
                         title: str = "") -> None:
    """The feature comparison grid as a PNG: a row per backbone, the image then one PCA
    picture per mode. Each row's colours come from one PCA fitted to its tiling features,
    so a colour means the same feature direction across the row."""
    from bloomseg.figures import pyplot, save_figure

    plt = pyplot()
    names = list(dict.fromkeys(r.backbone for r in results))
    h, w = image.shape[:2]
    columns = 1 + len(COMPARISON_MODES)
    fig, axes = plt.subplots(len(names), columns, squeeze=False, constrained_layout=True,
                             figsize=(3.2 * columns, 3.2 * len(names) * h / w + 0.6))
    for row, name in zip(axes, names):
        panels = {r.mode: r for r in results if r.backbone == name}
        pca = PCA.fit(panels["tiling"].features)
        row[0].imshow(image)
        row[0].set_title(f"{name}: image {w}x{h}", fontsize=9)
        for ax, mode in zip(row[1:], COMPARISON_MODES):
            panel = panels[mode]
            gh, gw = panel.features.shape[1:]
            # resize: its grid spans the whole image; otherwise patches are 14 px and the
            # last row and column may hang over the image's edge
            extent = (0, w, h, 0) if mode == "resize" else (0, gw * PATCH_SIZE, gh * PATCH_SIZE, 0)
            ax.imshow(pca.rgb(panel.features), extent=extent, interpolation="nearest")
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_title(f"{mode}: {gw}x{gh} patches, {panel.seconds:.1f} s", fontsize=9)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
