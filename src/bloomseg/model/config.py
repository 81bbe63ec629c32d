"""What defines a model: the settings it is rebuilt from, checked in one place.

A training run, a checkpoint and an exported model all carry these settings; an exported
model carries nothing else (no data, output or weights paths). Files written by older
versions lack the settings added since, and :data:`LEGACY` gives the values they meant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from bloomseg.backbone import PATCH_SIZE
from bloomseg.errors import ConfigError
from bloomseg.settings import Range, check_ranges, setting

HEADS = ("linear", "transposed_conv", "fusion")
"""Heads over ViT features; a ``unet`` model is a network of its own (backbone ``unet``)."""
MODES = ("tiling", "padding", "resize")
"""What the network sees of an image (see :mod:`bloomseg.model.inputs`)."""
NORMALISATIONS = ("none", "percentile")
"""How each image's levels are set before the network sees it (see
:func:`bloomseg.model.inputs.normalise`)."""
DIAMETER = Range(float, 5, 1000)
"""px: the cell diameters a model or an image may have."""
MAX_UNET_LEVELS = 8
"""The deepest U-Net a model file may ask for (16 * 2**7 = 2048 channels at the bottom)."""

LEGACY = {"unet_levels": 4, "centres": False, "centre_sigma": 0.15, "unfreeze_blocks": 0,
          "cell_diameter": None, "common_size": False, "normalise": "none", "augment": [],
          "size_head": False, "scale_range": 1.25}
"""The values that files written before a setting existed meant: a 4-level U-Net, no
centre map (then centre Gaussians of sigma 0.15), a frozen backbone, a cell size not
measured (:func:`bloomseg.model.files.load_model` measures it from the run's data where
that is at hand), images trained at their own scale, no per-image normalisation and none
of the microscope augmentations."""


@dataclass(frozen=True)
class ModelConfig:
    """The settings a trained model is rebuilt from.

    Attributes:
        backbone: registry name (``dinobloom-s`` ...) or ``unet`` (no backbone).
        head: one of :data:`HEADS`, or ``unet``.
        mode: one of :data:`MODES`, as trained.
        tile: tile side in px (``tiling``) or the resized side (``resize``).
        centres: the model also predicts a cell-centre map (a second channel).
        unet_levels: resolution levels of a ``unet``.
        unfreeze_blocks: fine-tuned last blocks of the backbone.
        cell_diameter: px, the median diameter of the cells the model was trained on (None:
            unknown, for models trained before it was measured); every size-like setting
            tuned with it (seed spacing, smallest cell, edge slivers) is at this scale.
        normalise: one of :data:`NORMALISATIONS`, applied to every image in training and
            in inference alike.
        size_head: the model also reads the size of the cells it is shown
            (:mod:`bloomseg.model.size`), so ``--diameter auto`` asks the network.
    """

    backbone: str = "dinobloom-s"
    head: str = "fusion"
    mode: str = "tiling"
    tile: int = setting(224, Range(int, PATCH_SIZE, 4096))
    centres: bool = True
    unet_levels: int = setting(5, Range(int, 1, MAX_UNET_LEVELS))
    unfreeze_blocks: int = setting(0, Range(int, 0, 64))
    cell_diameter: float | None = setting(None, DIAMETER)
    normalise: str = "percentile"
    size_head: bool = False

    def check(self) -> None:
        """Raise ConfigError naming the first invalid setting."""
        for f in fields(self):
            value, kind = getattr(self, f.name), type(f.default)
            if f.default is None:  # optional: its range says what it accepts
                continue
            # bool is an int to Python, but not a size
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(f"{f.name} must be {kind.__name__}, got {value!r}")
        check_ranges(self)
        if self.normalise not in NORMALISATIONS:
            raise ConfigError(f"normalise {self.normalise!r} is not one of "
                              f"{', '.join(NORMALISATIONS)}")
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.tile % PATCH_SIZE:
            raise ConfigError(f"tile must be a multiple of {PATCH_SIZE}, got {self.tile}")
        if self.backbone == "unet" and self.head != "unet":
            raise ConfigError(f"the unet backbone has its own head, not {self.head!r}")
        if self.backbone != "unet" and self.head not in HEADS:
            raise ConfigError(f"head {self.head!r} is not one of {', '.join(HEADS)}")

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """The model settings among ``values`` (a run's or a file's config), with the
        :data:`LEGACY` values for those an older file lacks, checked.

        Raises:
            ConfigError: naming the first invalid setting.
        """
        known = {f.name for f in fields(cls)}
        found = {k: v for k, v in (LEGACY | values).items() if k in known}
        config = cls(**found)
        config.check()
        return config

    def as_dict(self) -> dict:
        return asdict(self)


MODEL_SETTINGS = tuple(f.name for f in fields(ModelConfig))
"""The allow-list of settings an exported model's config.json holds."""
