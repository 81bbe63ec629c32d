"""``Segmenter``: a trained model ready to segment whole images, and its ``Prediction``."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bloomseg.cells.instances import ALL_EDGES, DEFAULT_CENTRES, DEFAULT_DISTANCE, InstanceParams, separate
from bloomseg.errors import CheckpointError, ConfigError
from bloomseg.inference.logits import predict_logits
from bloomseg.inference.options import THRESHOLD, InferenceOptions, SegmenterSpec
from bloomseg.model.files import load_model, resolve_model
from bloomseg.model.network import SegmentationModel
from bloomseg.settings import range_of


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
        separation: how cells are separated (default: the centre map's defaults for a
            model that has one, else the distance transform's).
        name: what the model is called in reports.
    """

    def __init__(self, model: SegmentationModel, options: InferenceOptions = InferenceOptions(),
                 threshold: float = THRESHOLD, separation: InstanceParams | None = None,
                 name: str = "a model in memory") -> None:
        options.check()
        range_of(SegmenterSpec, "threshold").check("threshold", threshold)
        self.name = name
        self.model, self.options, self.threshold = model.eval(), options, threshold
        has_centres = model.out_channels > 1
        if separation is None or (separation.method == "centres" and not has_centres):
            separation = DEFAULT_CENTRES if has_centres else DEFAULT_DISTANCE
        separation.check()
        self.separation = separation

    @classmethod
    def load(cls, name: str | Path, weights: str | Path | None = None,
             threshold: float = THRESHOLD, keep_edges: bool = False, **options) -> Segmenter:
        """Load a trained model.

        Args:
            name: ``default`` (the model shipped with bloomseg), a run folder (its
                best.pt), an exported model folder, or a .pt file.
            weights: backbone weights file, if not the cached download.
            threshold: cell probability threshold.
            keep_edges: keep the slivers of cells at the image's edge that the model's
                tuned ``edge_min_area`` would drop.
            options: :class:`InferenceOptions` fields; mode and tile default to the
                model's training settings.
        """
        path = resolve_model(name)
        model, payload = load_model(path, weights=weights)
        trained = {"mode": payload["config"]["mode"], "tile": payload["config"]["tile"]}
        tuned = payload.get("instances")
        try:
            params = InstanceParams.from_dict(tuned) if tuned else None
        except (TypeError, ConfigError) as e:  # a model file is data: refuse, never guess
            raise CheckpointError(f"{path}: invalid model settings: instance settings "
                                  f"{tuned!r}: {e}") from None
        if params is not None and keep_edges:
            params = replace(params, edge_min_area=0)
        return cls(model, InferenceOptions(**(trained | options)), threshold, params,
                   name=str(name))

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
        if instances or self.separation.edge_min_area:
            labels, mask = separate(mask, centres, self.separation, edges)
        return Prediction(probability, mask, time.perf_counter() - start, centres,
                          labels if instances else None)
