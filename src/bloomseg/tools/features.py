"""Looking at backbone features: whole-image features in the three input modes, their PCA
pictures (one image, or the mode x backbone comparison grid), and the files of
``bloomseg features``."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bloomseg.backbone import PATCH_SIZE, TRAIN_SIZE
from bloomseg.inference.options import InferenceOptions
from bloomseg.settings import Range

if TYPE_CHECKING:  # torch loads with the first features, not with the command line
    from torch import Tensor, nn


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
    # the settings of a prediction, checked as such (features have no windows)
    InferenceOptions(mode, tile, batch_size=batch_size, window=4 * tile).check()
    import torch

    from bloomseg.inference.stitch import stitched_features
    from bloomseg.model.inputs import pad_reflect, render, to_tensor, whole_view

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
    def fit(cls, features: np.ndarray) -> PCA:
        """Fit to a (D, h, w) feature map. Component signs are fixed (largest entry
        positive), so the colours are reproducible."""
        import torch

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


def save_feature_maps(backbone: nn.Module, paths: list[Path], out_dir: str | Path,
                      mode: str = "tiling", tile: int = TRAIN_SIZE, batch_size: int = 8,
                      overwrite: bool = False, progress: bool = True) -> list[str]:
    """Write ``<stem>_features.npy`` and ``<stem>_pca.png`` for each image.

    Returns:
        Why images were skipped (their outputs exist, or they cannot be read), one line
        each naming the file.
    """
    from tqdm import tqdm

    from bloomseg.data.images import read_image
    from bloomseg.errors import BloomsegError
    from bloomseg.files import atomic_output, refuse_existing, save_png

    out, skipped = Path(out_dir), []
    for path in tqdm(paths, desc="features", unit="image", disable=not progress):
        npy, png = out / f"{path.stem}_features.npy", out / f"{path.stem}_pca.png"
        try:
            refuse_existing([npy, png], overwrite)
            image = read_image(path)
        except BloomsegError as e:  # the message names the file
            skipped.append(str(e))
            continue
        start = time.perf_counter()
        features = extract_features(backbone, image, mode, tile, batch_size)
        with atomic_output(npy) as f:
            np.save(f, features)
        save_png(png, pca_figure(image, features))
        if progress:
            tqdm.write(f"{path.name}: {features.shape} features in "
                       f"{time.perf_counter() - start:.1f} s -> {npy}")
    return skipped


GRID_TABLE = "feature_comparison.csv"
GRID_IMAGES = Range(int, 1, 100)
"""Smears a comparison may show, one figure each."""


def save_comparison_grids(backbones: Mapping[str, nn.Module], data: str | Path,
                          out_dir: str | Path, split: str = "test", images: int = 2,
                          tile: int = TRAIN_SIZE, batch_size: int = 8, overwrite: bool = False,
                          progress: bool = True) -> int:
    """For ``images`` smears spread over a split, the mode x backbone comparison grid
    (``feature_comparison_<stem>.png``) and :data:`GRID_TABLE` with grid sizes and seconds.

    Returns:
        The number of grids written.

    Raises:
        OutputExistsError: the table exists and ``overwrite`` is False.
    """
    from tqdm import tqdm

    from bloomseg.data.dataset import scan_split
    from bloomseg.data.images import read_image
    from bloomseg.files import refuse_existing, save_csv

    GRID_IMAGES.check("images", images)
    scan = scan_split(data, split)
    out = Path(out_dir)
    refuse_existing([out / GRID_TABLE], overwrite)
    count = max(1, min(images, len(scan.samples)))
    picks = np.unique(np.linspace(0, len(scan.samples) - 1, count).round().astype(int))
    rows = []
    for i in tqdm(picks, desc="feature grids", unit="image", disable=not progress):
        sample = scan.samples[i]
        image = read_image(sample.image)
        results = compare_modes(backbones, image, tile, batch_size)
        path = out / f"feature_comparison_{sample.stem}.png"
        save_comparison_grid(image, results, path,
                             title=f"{split}/{sample.stem}: PCA of patch features")
        rows += [{"image": sample.stem, "backbone": r.backbone, "mode": r.mode,
                  "grid": f"{r.features.shape[2]}x{r.features.shape[1]}",
                  "seconds": f"{r.seconds:.3f}", "figure": path.name} for r in results]
        if progress:
            tqdm.write(f"{sample.stem}: {path}")
    save_csv(out / GRID_TABLE, rows, ["image", "backbone", "mode", "grid", "seconds", "figure"])
    return len(picks)
