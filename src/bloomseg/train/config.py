"""Every setting of a training run, checked in one place, and what a run leaves behind.

No torch import here: the command line builds ``bloomseg train``'s options (defaults,
ranges, choices) from :class:`TrainConfig` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from bloomseg.data.images import MAX_PIXELS
from bloomseg.errors import ConfigError
from bloomseg.model.config import ModelConfig
from bloomseg.settings import COUNT, POSITIVE_INT, Range, check_ranges, range_of, setting
from bloomseg.train.augment import AUGMENTATIONS
from bloomseg.train.centres import SIGMA_SCALE

SCHEDULERS = ("cosine", "step", "none")
FREEZE = ("none", "norms", "encoder", "encoder+norms")
"""What fine-tuning leaves as it was (see :meth:`SegmentationModel.freeze`)."""
LOSSES = ("bce_dice", "ce", "dice", "focal")
RUN_FILES = ("config.json", "history.json", "history.csv", "best.pt", "last.pt",
             "training_curves.png", "train.log", "instance_tuning.csv")
_NON_NEGATIVE = Range(float, 0)


INHERITED = ("backbone", "head", "mode", "tile", "unet_levels", "normalise", "cell_diameter")
"""Model settings a fine-tune takes from its ``init`` model where they are not given (its
cell diameter too: fine-tuning keeps the scale the model learned)."""


@dataclass
class TrainConfig:
    """Every setting of a training run (``bloomseg train --help`` explains each)."""

    data: list[str]
    """Dataset roots (a single root may be given as a string)."""
    out: str
    mode: str = "tiling"
    backbone: str = "dinobloom-s"
    weights: str | None = None
    head: str | None = None
    unfreeze_blocks: int = setting(0, range_of(ModelConfig, "unfreeze_blocks"))
    epochs: int = setting(50, POSITIVE_INT)
    batch_size: int = setting(8, POSITIVE_INT)
    lr: float = setting(1e-3, Range(float, 0, low_open=True))
    weight_decay: float = setting(1e-4, _NON_NEGATIVE)
    loss: str = "bce_dice"
    bce_weight: float = setting(0.5, _NON_NEGATIVE)
    dice_weight: float = setting(0.5, _NON_NEGATIVE)
    scheduler: str = "cosine"
    step_size: int = setting(10, POSITIVE_INT)
    step_gamma: float = setting(0.5, Range(float, 0, 1, low_open=True))
    early_stopping: int = setting(10, COUNT)
    grad_clip: float = setting(1.0, _NON_NEGATIVE)
    seed: int = setting(0, COUNT)
    tile: int = setting(224, range_of(ModelConfig, "tile"))
    tiles_per_image: int = setting(8, POSITIVE_INT)
    val_fraction: float = setting(0.2, Range(float, 0, 1, high_open=True))
    flips: bool = True
    rotations: bool = True
    colour_jitter: bool = True
    hue_jitter: float = setting(0.03, Range(float, 0, 0.5))
    cache: bool = True
    cache_dir: str | None = None
    centres: bool = True
    centre_weight: float = setting(1.0, _NON_NEGATIVE)
    centre_sigma: float = setting(SIGMA_SCALE, Range(float, 0, 1, low_open=True))
    unet_levels: int = setting(5, range_of(ModelConfig, "unet_levels"))
    max_pixels: int = setting(MAX_PIXELS, POSITIVE_INT)
    init: str | None = None
    cell_diameter: float | None = setting(None, range_of(ModelConfig, "cell_diameter"))
    """Measured from the training data when the run starts (see ModelConfig)."""
    common_size: bool = True
    """Scale each image so its cells are at ``cell_diameter`` (see ``read_datasets``)."""
    normalise: str = "percentile"
    """Per-image normalisation (see :func:`bloomseg.model.inputs.normalise`)."""
    augment: list[str] = field(default_factory=lambda: list(AUGMENTATIONS))
    """The microscope augmentations drawn (see :mod:`bloomseg.train.augment`)."""
    scale_range: float = setting(2.0, Range(float, 1, 4))
    """The scale augmentation draws cells at 1/scale_range to scale_range times the run's
    diameter (log-uniform), so that a size error at prediction costs little."""
    size_head: bool = True
    """Also train the network to read the size of the cells it is shown (see
    :mod:`bloomseg.model.size`), where the run draws cells at known sizes
    (:meth:`sizes_drawn`; otherwise the run records it off)."""
    size_weight: float = setting(0.5, _NON_NEGATIVE)
    """Weight of the size head's loss (squared error of the log size)."""
    pairwise_weight: float = setting(1.0, _NON_NEGATIVE)
    """Weight of the pairwise colour term where masks are learned from boxes."""
    partial_boxes: list[str] = field(default_factory=list)
    """Roots whose boxes do not hold every cell (nothing is taken as background there)."""
    ignore_masks: list[str] = field(default_factory=list)
    """Roots whose masks are not used: their masks are learned from their boxes."""
    items_per_epoch: int | None = setting(None, POSITIVE_INT)
    """Training tiles per epoch, drawn from the images in turn (None: ``tiles_per_image``
    of each image): an epoch of the same length whatever the number of images."""
    freeze: str = "none"
    """What training leaves as it was: ``norms`` (batch-norm statistics), ``encoder``
    (the part that reads the image, and its norms), both, or nothing."""
    hold_out: list[str] = field(default_factory=list)
    """Image names (stems) held out for validation, instead of ``val/`` or a share."""
    adapt: bool = False
    """A few-image fine-tune (:meth:`adapted`): the separation settings are tuned on the
    training images where none are held out, and the model is exported with a card."""

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        if self.head is None:
            self.head = "unet" if self.backbone == "unet" else "fusion"

    @classmethod
    def adapted(cls, **given) -> TrainConfig:
        """The few-image recipe (``train --adapt``): :data:`ADAPT`'s settings, those
        ``given`` replacing them."""
        return cls(**(ADAPT | given | {"adapt": True}))

    def inherit(self, theirs: dict) -> None:
        """Fine-tuning: take the start model's settings (``theirs``, its config) for every
        model setting still at its default, so ``--init default`` needs nothing else."""
        defaults = {f.name: f.default for f in fields(self)} | {"head": "fusion"}
        for name in INHERITED:
            if name in theirs and getattr(self, name) == defaults[name]:
                setattr(self, name, theirs[name])

    def model_config(self) -> ModelConfig:
        """The settings of the model this run trains."""
        return ModelConfig(**{f.name: getattr(self, f.name) for f in fields(ModelConfig)})

    def check(self) -> None:
        """Raise ConfigError naming the first invalid setting."""
        check_ranges(self)
        self.model_config().check()
        if self.loss not in LOSSES:
            raise ConfigError(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.freeze not in FREEZE:
            raise ConfigError(f"freeze {self.freeze!r} is not one of {', '.join(FREEZE)}")
        if len(set(self.hold_out)) != len(self.hold_out):
            raise ConfigError(f"hold_out: an image is named twice ({', '.join(self.hold_out)})")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler {self.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if not self.data:
            raise ConfigError("data: at least one dataset root is needed")
        if len(set(self.data)) != len(self.data):
            raise ConfigError(f"data: a root is given twice ({', '.join(self.data)})")
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        if unknown:
            raise ConfigError(f"augment: {', '.join(unknown)} is not one of "
                              f"{', '.join(AUGMENTATIONS)}")
        for name in ("partial_boxes", "ignore_masks"):
            stray = [r for r in getattr(self, name) if r not in self.data]
            if stray:
                raise ConfigError(f"{name}: {', '.join(stray)} is not one of the --data roots")

    def sizes_drawn(self) -> bool:
        """Whether the crops show cells at known sizes other than the run's: images at
        one common size, drawn at other scales. A size head learns from nothing else, so
        a run without them trains none (and records so)."""
        return self.common_size and "scale" in self.augment and self.scale_range > 1

    def variants(self) -> list[int]:
        """Dihedral variants to draw from (see :func:`bloomseg.model.inputs.dihedral`)."""
        if self.flips and self.rotations:
            return list(range(8))
        if self.flips:
            return [0, 2, 4, 6]  # identity, both flips, and their product (a half turn)
        if self.rotations:
            return [0, 1, 2, 3]
        return [0]

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Settings from a dict (e.g. config.json), refusing unknown names."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**values)


ADAPT = {
    "init": "default",
    "val_fraction": 0.0,  # a few images are all needed to learn from
    "epochs": 10,
    "items_per_epoch": 96,  # ~1000 tiles whatever the number of images: a fixed time
    "lr": 3e-4,
    "early_stopping": 0,
    "scheduler": "cosine",
    "freeze": "norms",
    "hue_jitter": 0.5,
}
"""The few-image recipe (``--adapt``): from the default's weights, a short schedule of
strongly augmented tiles, every batch norm's statistics left as they were (a few images'
colours would otherwise shift every layer's inputs), and the cell-separation settings
tuned again on the training images (nothing is held out from so few). The freezing was
chosen on val by ``benchmarks/adapt.py`` (3 images per domain), from the default and from
start models that never saw the domain: ``norms`` matches ``encoder+norms`` where the start
model knew the microscope, forgets less of BBBC041, and where it did not, lets the encoder
learn what it must (PBC from a BBBC041-only start: F1 0.890 against 0.728)."""


ADAPT_MARGIN = 0.02
"""How much better (instance F1 on the images) re-tuned cell-separation settings must be
than the start model's to replace them in a few-image fine-tune (about one cell in fifty)..."""
ADAPT_MARGIN_CELLS = 2
"""...and at least this many cells' worth of F1 (2 / the cells boxed): on one image of
twenty cells, one cell is 0.05 of F1, and a grid's best there is chance."""


@dataclass
class TrainResult:
    """Where a run is and how it went."""

    run_dir: Path
    best_epoch: int
    best_dice: float | None  # None: no validation images or masks
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    best_score: float | None = None  # None: no validation images (the last epoch is kept)
    model_dir: Path | None = None  # an adapted model's exported folder (``--adapt``)


HARD_NEGATIVES = ("dense", "filled", "blurred", "overlapped", "isolated", "platelet")
"""What a red cell may be made to look like without becoming infected
(:func:`bloomseg.train.classifier.hard_negatives`)."""
HARD_KINDS = HARD_NEGATIVES[:3]
"""The kinds drawn by default: leaving a lab out, adding ``overlapped`` cut the false
calls on the malaria lab left out (15.1% to 13.6%) but made a healthy lab's fields less
often clean (BCCD 100% to 97%, Raabin 88% to 87%): ``benchmarks/classes_unseen.py``."""


@dataclass
class ClassesConfig:
    """Settings of a classifier training run.

    Attributes:
        model: the segmentation model whose cells are classified.
        data: dataset roots with boxes and ``classes.txt``, or of single-cell crops
            (:mod:`bloomseg.data.crops`).
        out: the run folder.
        epochs, batch_size, lr, weight_decay, early_stopping: the optimisation.
        items_per_epoch: windows drawn per epoch (the same number per class).
        views: augmented views of each training image besides the image itself.
        width: the classifier's first stage width.
        val_fraction, seed: the held-out share of a root without ``val`` (its
            ``splits.json``, as segmentation training uses).
        max_false_calls: the share of uninfected red cells of each validation dataset that may be
            called infected: the infected threshold is the lowest that keeps to it.
        uninfected: roots whose smears hold no malaria (normal blood): a ``data`` root's
            red cells are taught as uninfected (where otherwise a root that labels no
            infections teaches "red or infected"), and so is every cell it has, boxed or
            not; a folder that is no ``data`` root is a plain folder of images whose
            cells, found by the segmenter, are each any class but infected.
        inputs: what the classifier's colour channels hold
            (:data:`bloomseg.model.classifier.INPUTS`).
        hard_negatives: the share of uninfected red cells in a batch changed in ways that
            are no evidence of a parasite (:func:`bloomseg.train.classifier.hard_negatives`);
            hard_kinds: which of :data:`HARD_NEGATIVES`.
        transplants: the share of infected cells in a batch whose parasite is laid onto
            an uninfected red cell of another dataset instead
            (:func:`bloomseg.train.classifier.transplanted`).
        zoomed_white: the share of white cells in a batch shown larger, up to the whole
            window (:func:`bloomseg.train.classifier.zoomed`).
        faded_white: the share of white cells in a batch made paler evenly
            (:func:`bloomseg.train.classifier.faded`).
    """

    model: str = "default"
    data: list[str] = field(default_factory=list)
    out: str = "out/classes"
    epochs: int = setting(30, POSITIVE_INT)
    batch_size: int = setting(64, POSITIVE_INT)
    lr: float = setting(1e-3, Range(float, 0, 1, low_open=True))
    weight_decay: float = setting(1e-4, Range(float, 0, 1))
    early_stopping: int = setting(8, COUNT)
    items_per_epoch: int = setting(4000, POSITIVE_INT)
    views: int = setting(2, Range(int, 0, 8))
    width: int = setting(16, Range(int, 4, 256))
    val_fraction: float = setting(0.2, Range(float, 0, 1, low_open=True, high_open=True))
    seed: int = setting(0, COUNT)
    max_false_calls: float = setting(0.002, Range(float, 0, 1))
    uninfected: list[str] = field(default_factory=list)
    inputs: str = "relative"
    hard_negatives: float = setting(0.3, Range(float, 0, 1))
    hard_kinds: tuple[str, ...] = HARD_KINDS
    transplants: float = setting(0.0, Range(float, 0, 1))
    zoomed_white: float = setting(0.0, Range(float, 0, 1))
    faded_white: float = setting(0.0, Range(float, 0, 1))

    @property
    def all_roots(self) -> list[str]:
        """The ``data`` roots, then the plain ``uninfected`` folders."""
        return list(self.data) + [r for r in self.uninfected if r not in self.data]

    def check(self) -> None:
        """Raise ConfigError naming a bad setting."""
        from bloomseg.model.classifier import check_inputs

        if not self.data:
            raise ConfigError("--data: give at least one dataset root with boxes and classes.txt")
        check_ranges(self)
        check_inputs(self.inputs)
        odd = [k for k in self.hard_kinds if k not in HARD_NEGATIVES]
        if odd or not self.hard_kinds:
            raise ConfigError(f"hard_kinds: {odd[0] if odd else 'none'} is not a kind of hard "
                              f"negative ({', '.join(HARD_NEGATIVES)})")
        missing = [r for r in self.uninfected if r not in self.data and not Path(r).is_dir()]
        if missing:
            raise ConfigError(f"--uninfected {missing[0]}: no such folder (a --data root, or a "
                              "folder of images of blood free of malaria)")
