"""Whole-image prediction for images of any size, with memory bounded by a window.

``tiling`` mode has two strategies:

- ``stitch`` (default): the patch grid is cut into near-equal tiles of at most
  DinoBloom's 16x16 patches (optionally each with ``context`` patches of context around
  it), and the tile features are stitched into one feature map; the head then runs on
  the whole map, so it sees across tile borders and the backbone pays for each pixel
  once.
- ``blend``: the reference system's method: tiles of ``tile`` px at ``overlap``, each
  through backbone and head, logits blended with Gaussian weights (494 tiles for a
  1600x1200 image at 75% overlap).

``padding`` runs the whole image padded to a multiple of 14; ``resize`` runs it resized
to one tile and resizes the logits back. A U-Net is fully convolutional and runs on
windows of the image. Large images are processed in windows (with a margin for the
head's receptive field), so memory depends on the window, not on the image.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bloomseg.features import FeatureSource, stitched_features
from bloomseg.instances import ALL_EDGES, DEFAULT_CENTRES, DEFAULT_DISTANCE, InstanceParams, separate
from bloomseg.model import SegmentationModel, load_model, resolve_model
from bloomseg.preprocess import to_tensor
from bloomseg.views import MODES, chunks, pad_reflect, render, whole_view
from bloomseg.vit import PATCH_SIZE

STRATEGIES = ("stitch", "blend")


@dataclass(frozen=True)
class InferenceOptions:
    """How a whole image is run through a model.

    Attributes:
        mode: ``tiling``, ``padding`` or ``resize`` (as the model was trained).
        tile: tile side in px (``tiling``) or the resized side (``resize``).
        strategy: ``stitch`` or ``blend`` (``tiling`` mode).
        overlap: share of a tile that neighbours overlap (``blend``).
        sigma: Gaussian sigma as a share of the tile side (``blend``).
        context: patches of context around each tile's core (``stitch``).
        tta: also run the image mirrored left-right, top-bottom and both; average.
        batch_size: tiles per forward pass.
        window: side in px of the windows a large image is processed in.
    """

    mode: str = "tiling"
    tile: int = 224
    strategy: str = "stitch"
    overlap: float = 0.75
    sigma: float = 0.125
    context: int = 0
    tta: bool = False
    batch_size: int = 8
    window: int = 1680

    def check(self) -> None:
        """Raise ValueError naming an invalid option."""
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.tile <= 0 or self.tile % PATCH_SIZE:
            raise ValueError(f"tile {self.tile} must be a positive multiple of {PATCH_SIZE}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap {self.overlap} must be in [0, 1)")
        if not self.sigma > 0:
            raise ValueError(f"sigma {self.sigma} must be positive")
        if self.context < 0 or self.tile // PATCH_SIZE - 2 * self.context < 1:
            raise ValueError(f"context {self.context} must leave a core in a {self.tile} px tile")
        if self.window < 4 * self.tile:
            raise ValueError(f"window {self.window} must be at least 4 tiles ({4 * self.tile} px)")


def _live(model: SegmentationModel) -> FeatureSource:
    """The model's own backbone as a feature source."""
    return lambda names, tiles: model.features(tiles)


def _windows(length: int, size: int, margin: int) -> list[tuple[int, int, int, int]]:
    """(core start, core stop, region start, region stop) covering range(length)."""
    return [(a, b, max(0, a - margin), min(length, b + margin)) for a, b in chunks(length, size)]


def _stitch(model: SegmentationModel, image: np.ndarray, opts: InferenceOptions,
            features: FeatureSource | None) -> Tensor:
    """Logits of an image through windows; a ViT model sees stitched features."""
    h, w = image.shape[:2]
    # window and margin in whole grid cells, so every region starts on the model's grid
    # (ViT patches, U-Net pooling) as the whole image does; the margin covers its reach
    p = model.grid
    hp, wp = max(1, math.ceil(h / p)) * p, max(1, math.ceil(w / p)) * p
    size, margin = opts.window // p, math.ceil(model.reach / p)
    out: Tensor | None = None
    for a, b, ra, rb in _windows(hp // p, size, margin):
        for c, d, rc, rd in _windows(wp // p, size, margin):
            region = image[ra * p:rb * p, rc * p:rd * p]
            if model.backbone is None:
                # the U-Net pads to its own multiple as it does for the whole image
                logits = model(to_tensor(region))
            else:
                # pad each region, not the image: a copy of a huge image costs as much as it
                x = to_tensor(pad_reflect(region, (rb - ra) * p, (rd - rc) * p))
                maps = stitched_features(features or _live(model), x, opts.tile,
                                         opts.context, opts.batch_size, (ra, rc))
                logits = model.forward_head(maps, x)
            if out is None:
                out = logits.new_zeros((logits.shape[1], h, w))
            b_px, d_px = min(b * p, h), min(d * p, w)
            out[:, a * p:b_px, c * p:d_px] = logits[0, :, (a - ra) * p:b_px - ra * p,
                                                    (c - rc) * p:d_px - rc * p]
    return out


def gaussian_weights(tile: int, sigma: float) -> Tensor:
    """(tile, tile) blending weights: a Gaussian of sigma = ``sigma`` * tile about the
    centre, 1 at the centre, never below 1e-4 so tile edges still count."""
    centre = (tile - 1) / 2
    g = torch.exp(-((torch.arange(tile) - centre) ** 2) / (2 * (sigma * tile) ** 2))
    return torch.outer(g, g).clamp_min(1e-4)


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of side ``tile`` stepping by at most tile * (1 - overlap),
    the first at 0 and the last flush with the end (``length`` >= ``tile``)."""
    stride = max(1, round(tile * (1 - overlap)))
    count = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (count - 1)) if count > 1 else 0 for i in range(count)]


def _blend(model: SegmentationModel, image: np.ndarray, opts: InferenceOptions) -> Tensor:
    """The reference's sliding window: overlapping tiles, Gaussian-blended logits."""
    h, w = image.shape[:2]
    t = opts.tile
    padded = pad_reflect(image, max(h, t), max(w, t))
    weight = gaussian_weights(t, opts.sigma)
    boxes = [(y, x) for y in tile_starts(padded.shape[0], t, opts.overlap)
             for x in tile_starts(padded.shape[1], t, opts.overlap)]
    total: Tensor | None = None
    norm = torch.zeros(padded.shape[:2])
    for start in range(0, len(boxes), opts.batch_size):
        batch = boxes[start:start + opts.batch_size]
        x = torch.cat([to_tensor(padded[y:y + t, x0:x0 + t]) for y, x0 in batch])
        logits = model(x)
        if total is None:
            total = logits.new_zeros((logits.shape[1], *padded.shape[:2]))
        for (y, x0), tile_logits in zip(batch, logits):
            total[:, y:y + t, x0:x0 + t] += tile_logits * weight
            norm[y:y + t, x0:x0 + t] += weight
    return (total / norm)[:, :h, :w]


def predict_logits(model: SegmentationModel, image: np.ndarray,
                   options: InferenceOptions = InferenceOptions(),
                   features: FeatureSource | None = None) -> Tensor:
    """Logits of a whole image; call under ``torch.no_grad()`` with the model in eval mode.

    Args:
        model: the segmentation model.
        image: (H, W, 3) uint8 RGB, any size from 1x1.
        options: mode, strategy and their settings.
        features: where backbone features come from in the stitch strategy (default:
            the backbone); training passes its feature cache.

    Returns:
        (C, H, W) float32 logits.
    """
    options.check()
    if options.tta:
        plain = replace(options, tta=False)
        total = None
        for axes in ((), (1,), (0,), (0, 1)):
            flipped = np.ascontiguousarray(np.flip(image, axes)) if axes else image
            logits = predict_logits(model, flipped, plain, features if not axes else None)
            logits = torch.flip(logits, [a + 1 for a in axes]) if axes else logits
            total = logits if total is None else total + logits
        return total / 4
    if options.mode == "tiling":
        if options.strategy == "blend":
            return _blend(model, image, options)
        return _stitch(model, image, options, features)
    h, w = image.shape[:2]
    if model.backbone is None and options.mode == "padding":
        return _stitch(model, image, options, None)
    view = whole_view(h, w, options.mode, options.tile)
    x = to_tensor(render(image, view, options.mode, options.tile))
    if model.backbone is None:
        logits = model(x)
    else:
        maps = features([view.name], x) if features is not None else model.features(x)
        logits = model.forward_head(maps, x)
    if options.mode == "resize":
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0]
    return logits[0, :, :h, :w]


@dataclass
class Prediction:
    """A segmented image.

    Attributes:
        probability: (H, W) float32 cell probability.
        mask: (H, W) bool, probability > threshold, less the slivers of cells cut by
            the image's edge that the model's settings drop (``edge_min_area``).
        seconds: time the prediction took (with the instance step, if asked for).
        centres: (H, W) float32 cell-centre probability, for models that learned it.
        labels: (H, W) int32 cells 1..N (0 background), if instances were asked for.
    """

    probability: np.ndarray
    mask: np.ndarray
    seconds: float
    centres: np.ndarray | None = None
    labels: np.ndarray | None = None


class Segmenter:
    """A trained model ready to segment whole images.

    Args:
        model: the segmentation model (put in eval mode here).
        options: how images are run through it.
        threshold: probability above which a pixel is cell.
        instances: how cells are separated (default: the centre map's defaults for a
            model that has one, else the distance transform's).
        name: what the model is called in reports.
    """

    def __init__(self, model: SegmentationModel, options: InferenceOptions = InferenceOptions(),
                 threshold: float = 0.5, instances: InstanceParams | None = None,
                 name: str = "a model in memory") -> None:
        options.check()
        self.name = name
        self.model, self.options, self.threshold = model.eval(), options, threshold
        has_centres = model.out_channels > 1
        if instances is None or (instances.method == "centres" and not has_centres):
            instances = DEFAULT_CENTRES if has_centres else DEFAULT_DISTANCE
        instances.check()
        self.instances = instances

    @classmethod
    def load(cls, path: str | Path, weights: str | Path | None = None,
             threshold: float = 0.5, keep_edges: bool = False, **options) -> "Segmenter":
        """Load a trained model.

        Args:
            path: ``default`` (the model shipped with bloomseg), a run folder (its
                best.pt), an exported model folder, or a .pt file.
            weights: backbone weights file, if not the cached download.
            threshold: cell probability threshold.
            keep_edges: keep the slivers of cells at the image's edge that the model's
                tuned ``edge_min_area`` would drop.
            options: :class:`InferenceOptions` fields; mode and tile default to the
                model's training settings.
        """
        model, payload = load_model(resolve_model(path), weights=weights)
        trained = {"mode": payload["config"]["mode"], "tile": payload["config"]["tile"]}
        tuned = payload.get("instances")
        params = InstanceParams.from_dict(tuned) if tuned else None
        if params is not None and keep_edges:
            params = replace(params, edge_min_area=0)
        return cls(model, InferenceOptions(**(trained | options)), threshold, params,
                   name=str(path))

    def logits(self, image: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 -> (C, H, W) float32 logits."""
        with torch.no_grad():
            return predict_logits(self.model, image, self.options)

    def predict(self, image: np.ndarray, instances: bool = False,
                edges: tuple[bool, bool, bool, bool] = ALL_EDGES) -> Prediction:
        """Cell probability and mask of an (H, W, 3) uint8 image, at its size; with
        ``instances``, also one label per cell.

        Args:
            image: (H, W, 3) uint8 RGB.
            instances: also label the cells.
            edges: which sides of ``image`` are the edges of the whole image (top,
                bottom, left, right): a block of a larger image passes False for the
                sides it shares with other blocks, so that slivers are only dropped at
                the real edge (``InstanceParams.edge_min_area``).
        """
        start = time.perf_counter()
        logits = self.logits(image).sigmoid_()  # in place: images can be huge
        probability = logits[0].numpy()
        centres = logits[1].numpy() if logits.shape[0] > 1 else None
        mask = probability > self.threshold
        labels = None
        if instances or self.instances.edge_min_area:
            labels, mask = separate(mask, centres, self.instances, edges)
        return Prediction(probability, mask, time.perf_counter() - start, centres,
                          labels if instances else None)
