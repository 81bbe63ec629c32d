"""How an image is run through a model, and what a process needs to load one: settings
only, checked in one place, with no torch import (the command line reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from bloomseg.backbone import PATCH_SIZE
from bloomseg.errors import ConfigError
from bloomseg.model.config import DIAMETER, ModelConfig
from bloomseg.settings import Range, check_ranges, range_of, setting

STRATEGIES = ("stitch", "blend")
THRESHOLD = 0.5
"""Cell probability above which a pixel is cell."""
AUTO, OWN = "auto", "model"
LABELLED = "labels"
"""The source of a diameter measured on the cells of a label image made elsewhere."""
"""The images' cell diameter: estimated per image, or the model's own (no resampling)."""
IMAGE_DIAMETER = replace(DIAMETER, words=(AUTO, OWN))
"""What an image's cell diameter may be given as: px, ``auto`` or ``model``."""
MAX_AUTO_ZOOM = 4.0
"""The most an automatic estimate enlarges an image (cells estimated under the model's
diameter / 4): a wrong small estimate would otherwise make a huge, slow image. A given
``--diameter`` is not bounded."""


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
    tile: int = setting(224, range_of(ModelConfig, "tile"))
    strategy: str = "stitch"
    overlap: float = setting(0.75, Range(float, 0, 1, high_open=True))
    sigma: float = setting(0.125, Range(float, 0, low_open=True))
    context: int = setting(0, Range(int, 0))
    tta: bool = False
    batch_size: int = setting(8, Range(int, 1, 4096))
    window: int = setting(1680, Range(int, 1, None))

    def check(self) -> None:
        """Raise ConfigError naming an invalid option."""
        check_ranges(self)
        ModelConfig(mode=self.mode, tile=self.tile).check()  # where mode and tile are owned
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        core = self.tile // PATCH_SIZE
        if core - 2 * self.context < 1:
            raise ConfigError(f"context must be at most {(core - 1) // 2} patches, so that a "
                              f"{self.tile} px tile keeps a core; got {self.context}")
        if self.window < 4 * self.tile:
            raise ConfigError(f"window must be at least 4 tiles ({4 * self.tile} px), got "
                              f"{self.window}")


@dataclass(frozen=True)
class SegmenterSpec:
    """What a process needs to load a model itself: :meth:`Segmenter.load`'s arguments
    (each Dask worker loads its own copy from it).

    Attributes:
        model: ``default``, a run folder, an exported folder or a .pt file.
        weights: backbone weights file, if not the cached download.
        threshold: cell probability threshold.
        options: :class:`InferenceOptions` fields, as (name, value) pairs; mode and tile
            default to the model's.
        keep_edges: keep the slivers of cells at the image's edge.
        diameter: px, the cell diameter of the images, ``auto`` (estimated per image)
            or ``model`` (the model's own scale).
        classes: name each cell with the model's classifier, where it has one.
        classifier: a classifier to use instead of the model's (a ``train-classes`` run
            folder, its .pt, or a folder holding one).
    """

    model: str = "default"
    weights: str | None = None
    threshold: float = setting(THRESHOLD, Range(float, 0, 1, low_open=True, high_open=True))
    options: tuple[tuple[str, object], ...] = ()
    keep_edges: bool = False
    diameter: float | str = setting(AUTO, IMAGE_DIAMETER)
    classes: bool = True
    classifier: str | None = None

    def check(self) -> None:
        """Raise ConfigError naming an invalid setting, without loading the model (its
        settings are read: the tile decides how much context fits)."""
        check_ranges(self)
        from bloomseg.model.files import read_checkpoint_file, resolve_model

        config = read_checkpoint_file(resolve_model(self.model)).get("config", {})
        trained = {k: config[k] for k in ("mode", "tile") if k in config}
        InferenceOptions(**(trained | dict(self.options))).check()
        if self.classifier is not None and self.classes:
            from bloomseg.model.files import load_classifier, resolve_classifier

            load_classifier(resolve_classifier(self.classifier))

    def load(self):
        """The :class:`bloomseg.inference.segmenter.Segmenter` this describes."""
        from bloomseg.inference.segmenter import Segmenter

        return Segmenter.load(self.model, weights=self.weights, threshold=self.threshold,
                              keep_edges=self.keep_edges, diameter=self.diameter,
                              classes=self.classes,
                              classifier=self.classifier if self.classes else None,
                              **dict(self.options))

    def absolute(self) -> SegmenterSpec:
        """The same with file paths made absolute, for workers started elsewhere."""
        model = self.model if self.model == "default" or not Path(self.model).exists() \
            else str(Path(self.model).resolve())
        weights = str(Path(self.weights).resolve()) if self.weights else None
        classifier = str(Path(self.classifier).resolve()) if self.classifier and \
            Path(self.classifier).exists() else self.classifier
        return replace(self, model=model, weights=weights, classifier=classifier)
