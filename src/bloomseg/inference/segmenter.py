"""``Segmenter``: a trained model ready to segment whole images, and its ``Prediction``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bloomseg.cells.instances import ALL_EDGES, DEFAULT_CENTRES, DEFAULT_DISTANCE, InstanceParams, separate
from bloomseg.cells.types import cell_types
from bloomseg.data.resampling import grid_factor, resample, scale_tensor
from bloomseg.data.vocabulary import CLASSES
from bloomseg.errors import CheckpointError, ConfigError
from bloomseg.inference.logits import predict_logits
from bloomseg.inference.options import (
    AUTO,
    IMAGE_DIAMETER,
    LABELLED,
    OWN,
    THRESHOLD,
    InferenceOptions,
    SegmenterSpec,
)
from bloomseg.inference.scale import Scale, estimated_scale, found_size_note
from bloomseg.model.classifier import CellClassifier, classify, red_profile
from bloomseg.model.config import DIAMETER
from bloomseg.model.files import (
    carries_classifier,
    load_classifier,
    load_model,
    resolve_classifier,
    resolve_model,
)
from bloomseg.model.inputs import image_levels, normalise
from bloomseg.model.network import SegmentationModel
from bloomseg.settings import range_of


def _channels_last(module):
    """A network with its weights stored channels last (a stand-in without weights as it
    is): convolutions on the CPU then run about 1.5x faster, equal to 1e-7."""
    if isinstance(module, torch.nn.Module):
        return module.to(memory_format=torch.channels_last)
    return module


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
        diameter_source: ``model`` (the model's own scale), ``given`` or ``estimated``.
        diameter_note: what a person should know about the diameter ('' when nothing):
            the scale's note (:class:`~bloomseg.inference.scale.Scale`), and where the
            whole cells found are not the size they were segmented at, that too.
        classes: per cell (label order), its class, stage and probabilities
            (:func:`bloomseg.cells.types.cell_types`), where a classifier named the cells.
        estimate: the size step's record (with an estimated diameter: the classical
            estimate, the network's readings).
        qc: the image's quality verdict (:class:`bloomseg.quality.Verdict`), once
            :func:`bloomseg.quality.judge` has judged it (the command line, the viewer and
            ``evaluate`` always do).
        red_profile: (F,) what the field's red cells look like to the classifier
            (:func:`bloomseg.model.classifier.red_profile`; None without classes or with
            too few red cells): a run's fields are judged together against the labs the
            classifier learnt (:func:`bloomseg.quality.judge_run`).
    """

    probability: np.ndarray
    mask: np.ndarray
    seconds: float
    centres: np.ndarray | None = None
    labels: np.ndarray | None = None
    diameter: float | None = None
    diameter_source: str = OWN
    diameter_note: str = ""
    classes: list[dict] | None = None
    estimate: Scale | None = None
    qc: object | None = None  # a bloomseg.quality.Verdict: that layer is above this one
    red_profile: np.ndarray | None = None

    @property
    def scale(self) -> Scale:
        """The cell diameter it was made at, its source and note (with the size step's
        record where it estimated the diameter)."""
        if self.estimate is not None:
            return replace(self.estimate, note=self.diameter_note)
        return Scale(self.diameter, self.diameter_source, self.diameter_note)


STEPS = ("cell size", "cell probability", "cells", "classes")
"""The steps of :meth:`Segmenter.predict`, in order (the last two where asked for)."""
SMALL_CELLS = 8
"""With a classifier, cells down to 1/SMALL_CELLS of the size limit are kept for it to
name: those it calls platelets stay (platelets are a tenth of a red cell's area), the
rest go."""


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
        diameter: the cell diameter of the images, where it is not given per image: px,
            ``auto`` (estimated per image) or ``model`` (the model's own scale).
        normalise: the model's per-image normalisation (``none`` or ``percentile``, see
            :func:`bloomseg.model.inputs.normalise`).
        classifier: a :class:`~bloomseg.model.classifier.CellClassifier` that names each
            cell (None: cells are not classified).
    """

    def __init__(self, model: SegmentationModel, options: InferenceOptions = InferenceOptions(),
                 threshold: float = THRESHOLD, separation: InstanceParams | None = None,
                 name: str = "a model in memory", cell_diameter: float | None = None,
                 diameter: float | str = AUTO, normalise: str = "none",
                 classifier: CellClassifier | None = None) -> None:
        options.check()
        range_of(SegmenterSpec, "threshold").check("threshold", threshold)
        if cell_diameter is not None:
            DIAMETER.check("cell_diameter", cell_diameter)
        IMAGE_DIAMETER.check("diameter", diameter)
        self.name, self.cell_diameter, self.diameter = name, cell_diameter, diameter
        self.normalise, self.classifier = normalise, _channels_last(classifier)
        self._check_known(diameter)
        self.model = _channels_last(model.eval())
        self.options, self.threshold = options, threshold
        has_centres = model.out_channels > 1
        if separation is None or (separation.method == "centres" and not has_centres):
            separation = DEFAULT_CENTRES if has_centres else DEFAULT_DISTANCE
        separation.check()
        self.separation = separation

    @classmethod
    def load(cls, name: str | Path, weights: str | Path | None = None,
             threshold: float = THRESHOLD, keep_edges: bool = False,
             diameter: float | str = AUTO, classes: bool = True,
             classifier: str | Path | None = None, **options: Any) -> Segmenter:
        """Load a trained model.

        Args:
            name: ``default`` (the model shipped with bloomseg), a run folder (its
                best.pt), an exported model folder, or a .pt file.
            weights: backbone weights file, if not the cached download.
            threshold: cell probability threshold.
            keep_edges: keep the slivers of cells at the image's edge that the model's
                tuned ``edge_min_area`` would drop.
            diameter: the cell diameter of the images: px, ``auto`` or ``model``.
            classes: name each cell with the model's classifier, where it has one.
            classifier: a classifier to use instead (a ``train-classes`` run folder, its
                .pt, or a folder holding one).
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
        found = None
        if classifier is not None:
            found = load_classifier(resolve_classifier(classifier))[0]
        elif classes and carries_classifier(path):
            found = load_classifier(path)[0]
        return cls(model, InferenceOptions(**(trained | options)), threshold, params,
                   name=str(name), cell_diameter=payload["config"]["cell_diameter"],
                   diameter=diameter, normalise=payload["config"].get("normalise", "none"),
                   classifier=found)

    def levels_of(self, image: np.ndarray) -> np.ndarray | None:
        """The levels the model's normalisation takes from an image (None: it has none):
        measured once on a large image's central field and passed to each block."""
        return None if self.normalise == "none" else image_levels(image)

    def logits(self, image: np.ndarray) -> Tensor:
        """(H, W, 3) uint8, already normalised -> (C, H, W) float32 logits."""
        with torch.no_grad():
            return predict_logits(self.model, image, self.options).contiguous()

    def scale_of(self, image: np.ndarray | None, diameter: float | str | None = None,
                 normalised: np.ndarray | None = None) -> Scale:
        """The cell diameter to segment an image at.

        Args:
            image: (H, W, 3) uint8 RGB, the field to estimate on (needed for ``auto``
                only).
            diameter: px, ``auto`` (:func:`bloomseg.inference.scale.estimated_scale`: the
                network's reading where the model has a size head, else the classical
                estimate) or ``model`` (default: the segmenter's ``diameter``).
            normalised: ``image`` as the model sees it, where already made (default:
                normalised here by its own levels, where the network reads the size).

        Raises:
            ConfigError: a diameter out of range, or one in px given to a model that does
                not record its own.
        """
        diameter = self.diameter if diameter is None else diameter
        IMAGE_DIAMETER.check("diameter", diameter)
        if diameter == OWN:
            return Scale(self.cell_diameter, OWN)
        if diameter != AUTO:
            self._check_known(diameter)
            return Scale(float(diameter), "given")
        if self.cell_diameter is None:
            return Scale(None, OWN, "the model does not record its cell diameter: "
                                    "segmented at its own scale")
        if normalised is None and self.model.size_head is not None:
            normalised = normalise(image, self.normalise)
        return estimated_scale(image, self.cell_diameter, self.model, normalised)

    def predict(self, image: np.ndarray, instances: bool = False,
                edges: tuple[bool, bool, bool, bool] = ALL_EDGES,
                diameter: float | str | Scale | None = None,
                origin: tuple[int, int] = (0, 0), levels: np.ndarray | None = None,
                classes: bool = True, step: Callable[[str], None] | None = None) -> Prediction:
        """Cell probability and mask of an (H, W, 3) uint8 image, at its size; with
        ``instances``, also one label per cell.

        Args:
            image: (H, W, 3) uint8 RGB.
            instances: also label the cells.
            edges: which sides of ``image`` are the edges of the whole image (top,
                bottom, left, right): a block of a larger image passes False for the
                sides it shares with other blocks, so that slivers are only dropped at
                the real edge (``InstanceParams.edge_min_area``).
            diameter: the image's cell diameter: px, ``auto``, ``model`` or a
                :class:`Scale` already decided (default: the segmenter's ``diameter``).
                Unless it is the model's own, the image is resampled so its cells are at
                the model's diameter, predicted, and the probabilities mapped back; the
                mask and the cells are then made on the image's own pixel grid, with the
                model's size settings scaled to the image's cells.
            origin: (row, column) of ``image``'s first pixel in the whole image it is a
                block of (multiples of :data:`bloomseg.data.resampling.GRID` where it is
                scaled).
            levels: the whole image's levels (:meth:`levels_of`), for a block of it
                (default: ``image``'s own).
            classes: with ``instances``, name each cell, where the segmenter has a
                classifier.
            step: called with the name of each step as it starts (:data:`STEPS`), for a
                progress display; an exception it raises stops the prediction there (how
                a viewer cancels).

        Raises:
            ConfigError: a diameter out of range, or one in px given to a model that does
                not record its own.
        """
        start = time.perf_counter()
        step = step or (lambda name: None)
        step(STEPS[0])
        seen = normalise(image, self.normalise, levels)
        scale = (diameter if isinstance(diameter, Scale)
                 else self.scale_of(image, diameter, seen))
        # on the one grid of factors that blocks of a large image share (data.resampling)
        factor = 1.0 if scale.source == OWN else grid_factor(self.cell_diameter / scale.diameter)
        scaled = seen if factor == 1 else resample(seen, factor)
        # a block of a larger image is padded so the model's grid falls where it falls on
        # the whole image, which it then sees the same
        top, left = (round(o * factor) % self.model.grid for o in origin)
        if top or left:
            scaled = np.pad(scaled, ((top, 0), (left, 0), (0, 0)), mode="reflect")
        step(STEPS[1])
        logits = self.logits(scaled)[:, top:, left:]
        if factor != 1:  # back onto the image's own pixel grid
            logits = scale_tensor(logits[None], 1 / factor, image.shape[:2])[0]
        logits = logits.sigmoid_()  # in place: images can be huge
        probability = logits[0].numpy()
        centres = logits[1].numpy() if logits.shape[0] > 1 else None
        mask = probability > self.threshold
        labels = None
        separation = self.separation.scaled(1 / factor)
        naming = instances and classes and self.classifier is not None
        if instances or separation.edge_min_area:
            # cells too small for the size limit may be platelets: the classifier decides
            used = replace(separation, min_area=max(1, separation.min_area // SMALL_CELLS)) \
                if naming else separation
            step(STEPS[2])
            labels, mask = separate(mask, centres, used, edges)
        types = profile = None
        if naming:
            step(STEPS[3])
            labels, types, profile = self._name_cells(
                seen, labels, self._naming_size(scale.diameter), separation.min_area)
        note = scale.note
        if instances and edges == ALL_EDGES and scale.diameter:  # a whole image's cells
            note = "; ".join(n for n in (note, found_size_note(labels, scale.diameter)) if n)
        return Prediction(probability, mask, time.perf_counter() - start, centres,
                          labels if instances else None, scale.diameter, scale.source,
                          note, types, scale, red_profile=profile)

    def cells_scale(self, image: np.ndarray, labels: np.ndarray,
                    diameter: float | str | None = None) -> Scale:
        """The cell diameter to name cells made elsewhere at.

        Args:
            image: (H, W, 3) uint8 RGB.
            labels: (H, W) its cells 1..N, 0 background.
            diameter: px (``given``), or ``auto``/None: the cells' own size where at
                least :data:`bloomseg.cells.size.FEW` are whole (source ``labels``:
                :func:`bloomseg.cells.size.labelled_diameter`), else the image's ``auto``
                scale.

        Raises:
            ConfigError: a diameter out of range or not a number.
        """
        from bloomseg.cells.size import FEW, labelled_diameter

        if diameter is None or diameter == AUTO:
            found = labelled_diameter(labels)
            if found.cells >= FEW:
                return Scale(found.diameter, LABELLED)
            scale = self.scale_of(image, AUTO)
            why = (f"only {found.cells} whole cell{'s' * (found.cells != 1)} in the labels: "
                   "the diameter was read from the image")
            return replace(scale, note="; ".join(n for n in (why, scale.note) if n))
        if diameter == OWN:
            raise ConfigError("diameter: cells from a label image are named at their own size "
                              "or one given in px, not the model's (give PX or auto)")
        return self.scale_of(image, diameter)

    def classes_of(self, image: np.ndarray, labels: np.ndarray,
                   diameter: float | str | None = None) -> list[dict]:
        """Each cell's class row, for cells made elsewhere (another segmenter, or corrected
        by hand): the classifier's call on every cell as it is, none joined or dropped.

        Args:
            image: (H, W, 3) uint8 RGB.
            labels: (H, W) cells 1..N, 0 background.
            diameter: px, or ``auto``/None (see :meth:`cells_scale`).

        Returns:
            One row per label 1..max (:func:`bloomseg.cells.types.cell_types`).

        Raises:
            ConfigError: the segmenter has no classifier.
        """
        if self.classifier is None:
            raise ConfigError(f"classes: the model {self.name} has no cell classifier")
        if labels.shape != image.shape[:2]:
            raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
        size = self._naming_size(self.cells_scale(image, labels, diameter).diameter)
        calls = classify(self.classifier, normalise(image, self.normalise, None), labels, size)
        return cell_types(calls.p, self.classifier.config.infected_threshold, calls.unfamiliar)

    def _naming_size(self, diameter: float | None) -> float:
        """The cell diameter cells are brought to the classifier at: the image's, else
        the model's own."""
        size = diameter or self.cell_diameter
        if size is None:
            raise ConfigError("classes: the model does not record its cell diameter, so its "
                              "cells cannot be brought to the classifier's size")
        return size

    def _name_cells(self, image: np.ndarray, labels: np.ndarray, diameter: float,
                    min_area: int) -> tuple[np.ndarray, list[dict], np.ndarray | None]:
        """Classify the cells, join touching pieces called white cells, and drop cells
        under ``min_area`` px unless they are called platelets.

        Args:
            image: (H, W, 3) uint8, normalised; labels: (H, W) cells 1..N.
            diameter: px, the image's cell diameter.
            min_area: px, the size limit of every cell but platelets.

        Returns:
            (labels 1..M, each cell's class row, the field's
            :func:`~bloomseg.model.classifier.red_profile`).
        """
        from bloomseg.cells.instances import drop_small, fits_one_cell, merge_touching, regroup

        classifier = self.classifier
        p, far, features = classify(classifier, image, labels, diameter)
        profile = red_profile(p, features)
        white = p.argmax(axis=1) == CLASSES.index("white_blood_cell")
        if white.sum() > 1:  # a lobed nucleus cut into pieces is one white cell
            merged, members = merge_touching(labels, white)
            joined = [i for i, m in enumerate(members) if len(m) > 1]
            if joined:
                # joined only where the shape is one white cell's and the classifier,
                # shown the whole, still calls it white: never on a guess
                only = np.zeros(len(members) + 1, np.int32)
                only[[i + 1 for i in joined]] = np.arange(1, len(joined) + 1)
                # judged against the whole field's cells, not the joined ones alone
                whole, whole_far, _ = classify(classifier, image, only[merged], diameter,
                                               field=labels)
                kept = fits_one_cell(labels, [members[i] for i in joined], diameter) & (
                    whole.argmax(axis=1) == CLASSES.index("white_blood_cell"))
                accepted = {i: (q, f) for i, q, f, k in zip(joined, whole, whole_far, kept) if k}
                groups, rows, fars = [], [], []
                for i, m in enumerate(members):
                    if i in accepted:
                        groups.append(m)
                        rows.append(accepted[i][0])
                        fars.append(accepted[i][1])
                    else:
                        groups += [[c] for c in m]
                        rows += [p[c - 1] for c in m]
                        fars += [far[c - 1] for c in m]
                labels, p, far = regroup(labels, groups), np.array(rows), np.array(fars, bool)
        types = cell_types(p, classifier.config.infected_threshold, far)
        areas = np.bincount(labels.ravel(), minlength=len(types) + 1)[1:]
        small = (areas < min_area) & np.array([t["class"] != "platelet" for t in types], bool)
        if small.any():
            labels = drop_small(np.where(small[labels - 1] & (labels > 0), 0, labels), 1)
            types = [t for t, s in zip(types, small) if not s]
        return labels, types, profile

    def _check_known(self, diameter: float | str) -> None:
        """Refuse a diameter in px where the model does not know its own."""
        if self.cell_diameter is None and diameter not in (AUTO, OWN):
            raise ConfigError("diameter: this model does not record the diameter of the cells "
                              "it was trained on (trained before bloomseg measured it, and its "
                              "data is not at hand); segment at its own scale, with --diameter "
                              "model, or retrain it")
