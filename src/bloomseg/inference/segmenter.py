"""``Segmenter``: a trained model ready to segment whole images, and its ``Prediction``."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bloomseg.cells.instances import ALL_EDGES, DEFAULT_CENTRES, DEFAULT_DISTANCE, InstanceParams, separate
from bloomseg.errors import CheckpointError, ConfigError
from bloomseg.inference.logits import predict_logits
from bloomseg.inference.options import THRESHOLD, InferenceOptions, SegmenterSpec
from bloomseg.model.config import DIAMETER
from bloomseg.model.files import load_model, resolve_model
from bloomseg.model.inputs import resample
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
        diameter: px, the cell diameter the image was segmented at (None: the model's,
            where it does not record one).
        diameter_source: ``model`` (the model's own scale), ``given``.
    """

    probability: np.ndarray
    mask: np.ndarray
    seconds: float
    centres: np.ndarray | None = None
    labels: np.ndarray | None = None
    diameter: float | None = None
    diameter_source: str = "model"


class Segmenter:
    """A trained model ready to segment whole images.

    Args:
        model: the segmentation model (put in eval mode here).
        options: how images are run through it.
        threshold: probability above which a pixel is cell.
        separation: how cells are separated (default: the centre map's defaults for a
            model that has one, else the distance transform's), at the model's scale.
        name: what the model is called in reports.
        cell_diameter: px, the diameter of the cells the model was trained on (None:
            unknown; images can then only be segmented at the model's own scale).
        diameter: px, the diameter of the cells of the images to segment, where it is not
            given per image (None: the model's own).
    """

    def __init__(self, model: SegmentationModel, options: InferenceOptions = InferenceOptions(),
                 threshold: float = THRESHOLD, separation: InstanceParams | None = None,
                 name: str = "a model in memory", cell_diameter: float | None = None,
                 diameter: float | None = None) -> None:
        options.check()
        range_of(SegmenterSpec, "threshold").check("threshold", threshold)
        for setting, value in (("cell_diameter", cell_diameter), ("diameter", diameter)):
            if value is not None:
                DIAMETER.check(setting, value)
        self.name, self.cell_diameter, self.diameter = name, cell_diameter, diameter
        self.model, self.options, self.threshold = model.eval(), options, threshold
        has_centres = model.out_channels > 1
        if separation is None or (separation.method == "centres" and not has_centres):
            separation = DEFAULT_CENTRES if has_centres else DEFAULT_DISTANCE
        separation.check()
        self.separation = separation

    @classmethod
    def load(cls, name: str | Path, weights: str | Path | None = None,
             threshold: float = THRESHOLD, keep_edges: bool = False,
             diameter: float | None = None, **options) -> Segmenter:
        """Load a trained model.

        Args:
            name: ``default`` (the model shipped with bloomseg), a run folder (its
                best.pt), an exported model folder, or a .pt file.
            weights: backbone weights file, if not the cached download.
            threshold: cell probability threshold.
            keep_edges: keep the slivers of cells at the image's edge that the model's
                tuned ``edge_min_area`` would drop.
            diameter: px, the cell diameter of the images (None: the model's own).
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
                   name=str(name), cell_diameter=payload["config"]["cell_diameter"],
                   diameter=diameter)

    def logits(self, image: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 -> (C, H, W) float32 logits."""
        with torch.no_grad():
            return predict_logits(self.model, image, self.options)

    def predict(self, image: np.ndarray, instances: bool = False,
                edges: tuple[bool, bool, bool, bool] = ALL_EDGES,
                diameter: float | None = None) -> Prediction:
        """Cell probability and mask of an (H, W, 3) uint8 image, at its size; with
        ``instances``, also one label per cell.

        Args:
            image: (H, W, 3) uint8 RGB.
            instances: also label the cells.
            edges: which sides of ``image`` are the edges of the whole image (top,
                bottom, left, right): a block of a larger image passes False for the
                sides it shares with other blocks, so that slivers are only dropped at
                the real edge (``InstanceParams.edge_min_area``).
            diameter: px, the diameter of the image's cells (default: the segmenter's
                ``diameter``). The image is resampled so its cells are at the model's
                diameter, predicted, and the probabilities mapped back; the mask and the
                cells are then made on the image's own pixel grid, with the model's
                size settings scaled to the image's cells.

        Raises:
            ConfigError: a diameter out of range, or one given to a model that does not
                record its own.
        """
        start = time.perf_counter()
        diameter = self.diameter if diameter is None else diameter
        factor = self._factor(diameter)
        if factor == 1:
            logits = self.logits(image)
        else:  # at the model's scale, then back onto the image's own pixel grid
            h, w = image.shape[:2]
            logits = F.interpolate(self.logits(resample(image, factor))[None], size=(h, w),
                                   mode="bilinear", align_corners=False, antialias=factor > 1)[0]
        logits = logits.sigmoid_()  # in place: images can be huge
        probability = logits[0].numpy()
        centres = logits[1].numpy() if logits.shape[0] > 1 else None
        mask = probability > self.threshold
        labels = None
        separation = self.separation.scaled(1 / factor)
        if instances or separation.edge_min_area:
            labels, mask = separate(mask, centres, separation, edges)
        return Prediction(probability, mask, time.perf_counter() - start, centres,
                          labels if instances else None,
                          diameter if diameter is not None else self.cell_diameter,
                          "given" if diameter is not None else "model")

    def _factor(self, diameter: float | None) -> float:
        """How much an image with cells of ``diameter`` px is scaled to the model's."""
        if diameter is None:
            return 1.0
        DIAMETER.check("diameter", diameter)
        if self.cell_diameter is None:
            raise ConfigError("diameter: this model does not record the diameter of the cells "
                              "it was trained on (trained before bloomseg measured it, and its "
                              "data is not at hand); segment at its own scale, without "
                              "--diameter, or retrain it")
        return self.cell_diameter / diameter
