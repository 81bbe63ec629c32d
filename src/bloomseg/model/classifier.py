"""The cell classifier: a small CNN that names each segmented cell, and its input windows.

Each cell is shown to it as a window centred on the cell, :data:`WINDOW` cell diameters
wide, brought to :data:`CROP` px a side: every image's cells at one size, whatever the
microscope's magnification, so a platelet stays small and a white cell large. Besides the
colour channels, a fourth channel is the cell's own mask, which says which of the cells
in the window is to be named.

The colour channels are either the (normalised) image's RGB (``inputs="rgb"``) or each
pixel's optical density **relative to its own field's cells** (``inputs="relative"``:
:func:`field_reference`): a stain or camera that makes every cell of a lab denser or
bluer moves the reference with them, so a cell is judged against its neighbours, not
against the labs the classifier learnt from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bloomseg.data.resampling import resample
from bloomseg.data.vocabulary import CLASSES
from bloomseg.errors import ConfigError
from bloomseg.settings import Range, check_ranges, setting

CROP = 64
"""px: the side of a cell's window as the classifier sees it."""
WINDOW = 1.6
"""The side of a cell's window in cell diameters: a red cell and its ring of neighbours;
most of a white cell, which is up to about twice a red cell's size."""
CHANNELS = 4
"""Red, green, blue (or their densities, see :data:`INPUTS`) and the cell's mask (0/1)."""
INPUTS = ("rgb", "relative")
"""What the colour channels hold: the normalised RGB (0..1 less 0.5), or each channel's
optical density divided by the field's cells' median (:func:`input_tensor`)."""


@dataclass(frozen=True)
class ClassifierConfig:
    """What a stored classifier is built from.

    Attributes:
        classes: the output classes, in order (:data:`bloomseg.data.vocabulary.CLASSES`).
        width: channels of the first of its four convolution stages (doubling).
        crop: px, its input side; window: cell diameters its input covers.
        infected_threshold: the probability of any parasite stage above which a cell is
            called infected (tuned on validation, specificity first).
        temperature: what the outputs are divided by before the softmax, calibrating the
            probabilities on validation (1: as trained; older classifiers).
        inputs: what the colour channels hold (:data:`INPUTS`).
        distance_limit: a cell whose features lie further than this from the centre of
            its class (:meth:`CellClassifier.distances`) is unlike what the classifier
            learnt, and its call is marked uncertain (0: not measured; older classifiers).
        labs: the training labs (datasets) whose red cells' features are stored
            (:meth:`CellClassifier.set_labs`): a run of fields is judged against them
            (:mod:`bloomseg.quality.run`; 0: none, older classifiers).
        memory: training and validation cells whose features are stored
            (:meth:`CellClassifier.set_memory`): adapting to a user's corrected cells
            shows them beside the user's, and checks the infected threshold on them
            again (0: none, older classifiers, which adapt without them).
        max_false_calls: the share of each validation dataset's uninfected red cells
            the infected threshold was chosen to call infected at most.
        lab_names: the training datasets' names, by their number in the memory.
    """

    classes: tuple[str, ...] = CLASSES
    width: int = setting(24, Range(int, 4, 256))
    crop: int = setting(CROP, Range(int, 16, 256))
    window: float = setting(WINDOW, Range(float, 0.5, 4))
    infected_threshold: float = setting(0.5, Range(float, 0, 1, low_open=True, high_open=True))
    temperature: float = setting(1.0, Range(float, 0.05, 20))
    inputs: str = "rgb"
    distance_limit: float = setting(0.0, Range(float, 0, 1e6))
    labs: int = setting(0, Range(int, 0, 1000))
    memory: int = setting(0, Range(int, 0, 10**6))
    max_false_calls: float = setting(0.002, Range(float, 0, 1))
    lab_names: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, values: dict) -> ClassifierConfig:
        """The settings as stored beside the weights; unknown or bad values refused.

        Raises:
            ConfigError: naming the bad setting.
        """
        try:
            config = cls(**{**values, "classes": tuple(values.get("classes", CLASSES)),
                            "lab_names": tuple(str(n) for n in values.get("lab_names", ()))})
        except TypeError as e:
            raise ConfigError(f"classifier settings: {e}") from None
        if config.classes != CLASSES:
            raise ConfigError(f"classifier classes {list(config.classes)} are not bloomseg's "
                              f"{list(CLASSES)}")
        check_ranges(config)
        check_inputs(config.inputs, "classifier inputs")
        return config

    def as_dict(self) -> dict:
        return asdict(self) | {"classes": list(self.classes), "lab_names": list(self.lab_names)}


def check_inputs(inputs: str, name: str = "inputs") -> None:
    """Refuse a value of :data:`INPUTS` that is not one.

    Raises:
        ConfigError: naming ``name`` and the values it takes.
    """
    if inputs not in INPUTS:
        raise ConfigError(f"{name}: {inputs!r} is not one of {', '.join(INPUTS)}")


def _stage(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
                         nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
                         nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
                         nn.BatchNorm2d(outputs), nn.ReLU(inplace=True))


class CellClassifier(nn.Module):
    """(N, 4, crop, crop) windows -> (N, len(classes)) logits.

    Four stages of two 3x3 convolutions (each followed by a halving), then the mean and
    the maximum over the last map: the maximum keeps a small dark parasite that a mean
    over the cell would wash out. The buffers ``centres`` (each class's mean feature on
    the training cells) and ``spread`` (each feature's spread around them) say how far a
    cell is from what was learnt (:meth:`distances`).
    """

    def __init__(self, config: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        w = config.width
        sizes = (CHANNELS, w, 2 * w, 4 * w, 8 * w)
        self.stages = nn.ModuleList(_stage(a, b) for a, b in zip(sizes, sizes[1:]))
        self.out = nn.Linear(2 * sizes[-1], len(config.classes))
        self.register_buffer("centres", torch.zeros(len(config.classes), 2 * sizes[-1]))
        self.register_buffer("spread", torch.ones(2 * sizes[-1]))
        self.register_buffer("lab_centres", torch.zeros(config.labs, 2 * sizes[-1]))
        self.register_buffer("lab_scatter", torch.ones(config.labs))
        # features in half precision: they are read only to adapt, and halve the file
        self.register_buffer("memory_features", torch.zeros(config.memory, 2 * sizes[-1],
                                                            dtype=torch.float16))
        self.register_buffer("memory_classes", torch.zeros(config.memory, dtype=torch.int64))
        self.register_buffer("memory_allowed", torch.zeros(config.memory, len(config.classes),
                                                           dtype=torch.bool))
        self.register_buffer("memory_labs", torch.zeros(config.memory, dtype=torch.int64))
        self.register_buffer("memory_val", torch.zeros(config.memory, dtype=torch.bool))

    def features(self, x: Tensor) -> Tensor:
        """(N, 4, crop, crop) -> (N, F) the pooled features the last layer reads."""
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.stages) - 1:
                x = nn.functional.max_pool2d(x, 2)
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x))

    def set_labs(self, centres: Tensor, scatter: Tensor) -> None:
        """Keep each training lab's red-cell profile: ``centres`` (L, F) the mean over
        its fields of a field's :func:`red_profile`, ``scatter`` (L,) the root-mean-square
        distance of its fields' profiles from it (per feature)."""
        self.lab_centres = centres.float().clone()
        self.lab_scatter = scatter.float().clone()

    def set_memory(self, features: Tensor, classes: Tensor, allowed: Tensor, labs: Tensor,
                   val: Tensor) -> None:
        """Keep training and validation cells' features (M, F), their classes (M,)
        (``-1``: a cell of malaria-free blood no box names), the classes each may be
        (M, len(classes)) bool, their lab (M,) and whether each is a validation cell (M,)
        bool: what :func:`bloomseg.train.classifier.adapt_classifier` replays and checks
        the threshold on (the layers before the last do not learn there, so the
        features stay the model's own)."""
        self.memory_features = features.to(torch.float16).clone()
        self.memory_classes = classes.long().clone()
        self.memory_allowed = allowed.bool().clone()
        self.memory_labs = labs.long().clone()
        self.memory_val = val.bool().clone()

    def distances(self, features: Tensor) -> Tensor:
        """(N, F) features -> (N, len(classes)) each cell's root-mean-square distance
        to each class's centre, in units of the training cells' spread."""
        z = features / self.spread
        return torch.cdist(z, self.centres / self.spread) / features.shape[1] ** 0.5

    def scaled(self, features: Tensor) -> Tensor:
        """Features in units of the training cells' spread (what :meth:`distances` and
        the lab profiles measure in)."""
        return features / self.spread


def window_scale(config: ClassifierConfig, diameter: float) -> float:
    """The factor that brings an image whose cells are ``diameter`` px to window scale."""
    return config.crop / (config.window * diameter)


def cell_windows(small: np.ndarray, small_labels: np.ndarray, config: ClassifierConfig
                 ) -> np.ndarray:
    """Every cell's window from an image already at window scale (:func:`window_scale`).

    Args:
        small: (h, w, 3) uint8, the normalised image at window scale.
        small_labels: (h, w) int labels at the same scale (cells 1..N; a cell too small
            to survive the scaling is shown by its centre pixel).
        config: the crop size.

    Returns:
        (N, 4, crop, crop) uint8 for cells 1..N (N = ``small_labels.max()``): RGB 0..255
        and the cell's mask 0/1 (:func:`input_tensor` makes the classifier's input).
    """
    from scipy import ndimage

    count = int(small_labels.max())
    c = config.crop
    out = np.zeros((count, CHANNELS, c, c), np.uint8)
    if not count:
        return out
    centres = ndimage.center_of_mass(np.ones(small_labels.shape), small_labels,
                                     np.arange(1, count + 1))
    image = np.pad(small, ((c, c), (c, c), (0, 0)), mode="reflect")
    labels = np.pad(small_labels, c)
    for i, (cy, cx) in enumerate(centres):
        if np.isnan(cy):
            continue
        top, left = int(round(cy)) + c - c // 2, int(round(cx)) + c - c // 2
        out[i, :3] = image[top:top + c, left:left + c].transpose(2, 0, 1)
        out[i, 3] = labels[top:top + c, left:left + c] == i + 1
    return out


DENSITY_FLOOR = 0.02
"""The smallest reference density: a field whose cells are nearly as bright as its
background (an empty or washed-out field) is not divided by zero."""


def optical_density(rgb: np.ndarray | Tensor):
    """uint8 RGB (0..255) -> optical density, -ln((v + 1) / 256): 0 for white
    background, about 5.5 for black."""
    if isinstance(rgb, Tensor):
        return -torch.log((rgb.float() + 1) / 256)
    return -np.log((np.asarray(rgb, np.float32) + 1) / 256)


def density_rgb(density: np.ndarray) -> np.ndarray:
    """Optical density -> uint8 RGB: the inverse of :func:`optical_density`."""
    return (np.exp(-density) * 256 - 1).round().clip(0, 255).astype(np.uint8)


def field_reference(small: np.ndarray, small_labels: np.ndarray) -> np.ndarray:
    """(3,) float32: the median optical density of each colour channel over every cell's
    pixels of a field (its red cells, above all: a few infected or white cells do not
    move a median); the densities of :data:`INPUTS` ``relative`` are divided by it.

    Args:
        small: (h, w, 3) uint8 the normalised image; small_labels: (h, w) its cells.
    """
    inside = small_labels > 0
    if not inside.any():  # no cells: the field as a whole
        inside = np.ones(small_labels.shape, bool)
    density = optical_density(small[inside])
    return np.maximum(np.median(density, axis=0), DENSITY_FLOOR).astype(np.float32)


def input_tensor(windows: np.ndarray, references: np.ndarray, inputs: str) -> Tensor:
    """The classifier's float input from uint8 windows.

    Args:
        windows: (N, 4, crop, crop) uint8 (:func:`cell_windows`).
        references: (N, 3) each window's field's :func:`field_reference`.
        inputs: ``rgb``: RGB / 255 less 0.5; ``relative``: each channel's density over
            its field's (a typical cell 1, background 0), halved less 0.5 and capped,
            so both lie in about -0.5..0.5 for a typical cell and its background.

    Returns:
        (N, 4, crop, crop) float32.
    """
    t = torch.from_numpy(np.ascontiguousarray(windows)).float()
    if inputs == "relative":
        ref = torch.from_numpy(np.asarray(references, np.float32))[:, :, None, None]
        t[:, :3] = (optical_density(t[:, :3]) / ref).clamp(max=6) / 2 - 0.5
    else:
        t[:, :3] = t[:, :3] / 255 - 0.5
    return t


def to_window_scale(image: np.ndarray, labels: np.ndarray, config: ClassifierConfig,
                    diameter: float) -> tuple[np.ndarray, np.ndarray]:
    """An image and its cells at window scale.

    Args:
        image: (H, W, 3) uint8, normalised as the segmentation model saw it.
        labels: (H, W) int cells 1..N.
        config: the classifier's crop and window.
        diameter: px, the image's cell diameter.

    Returns:
        ((h, w, 3) uint8 image, (h, w) labels) at :func:`window_scale`; labels by their
        nearest pixel, and a cell that no pixel keeps is put back at its centre.
    """
    from scipy import ndimage

    factor = window_scale(config, diameter)
    small = resample(image, factor)
    h, w = small.shape[:2]
    rows = np.minimum(((np.arange(h) + 0.5) / factor).astype(int), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) / factor).astype(int), labels.shape[1] - 1)
    small_labels = labels[np.ix_(rows, cols)]
    count = int(labels.max())
    lost = np.setdiff1d(np.arange(1, count + 1), np.unique(small_labels))
    if lost.size:  # tiny cells (platelets in a coarse image) must still be named
        centres = ndimage.center_of_mass(np.ones(labels.shape), labels, lost)
        for cell, (cy, cx) in zip(lost, centres):
            if not np.isnan(cy):
                small_labels[min(h - 1, int(cy * factor)), min(w - 1, int(cx * factor))] = cell
    return small, small_labels


class CellCalls(NamedTuple):
    """What the classifier says of an image's cells, rows in label order.

    Attributes:
        p: (N, len(classes)) float32 probabilities.
        unfamiliar: (N,) bool: the cell's features are further than the classifier's
            ``distance_limit`` from the centre of its likeliest class.
        features: (N, F) float32 the features in units of the training cells' spread
            (:meth:`CellClassifier.scaled`), for :func:`red_profile`.
    """

    p: np.ndarray
    unfamiliar: np.ndarray
    features: np.ndarray


RED_PROFILE_CELLS = 3
"""A field's red-cell profile needs at least this many cells called red."""


def red_profile(p: np.ndarray, features: np.ndarray) -> np.ndarray | None:
    """(F,) float32 the mean scaled features of a field's cells called red: what its
    red cells look like to the classifier (None under :data:`RED_PROFILE_CELLS`).

    Args:
        p: (N, len(CLASSES)) probabilities; features: (N, F) (:class:`CellCalls`).
    """
    red = p.argmax(axis=1) == CLASSES.index("red_blood_cell") if len(p) else np.zeros(0, bool)
    if red.sum() < RED_PROFILE_CELLS:
        return None
    return features[red].mean(axis=0).astype(np.float32)


def field_windows(config: ClassifierConfig, image: np.ndarray, labels: np.ndarray,
                  diameter: float, field: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Every cell's window of an image, and the field's reference, as the classifier
    is shown them.

    Args:
        config: the classifier's crop and window.
        image: (H, W, 3) uint8, normalised as the segmentation model saw it.
        labels: (H, W) int cells 1..N; diameter: px, the image's cell diameter.
        field: (H, W) all the field's cells, where ``labels`` holds only some of them
            (default: ``labels``).

    Returns:
        ((N, 4, crop, crop) uint8 :func:`cell_windows`, (3,) :func:`field_reference`).
    """
    small, small_labels = to_window_scale(image, labels, config, diameter)
    reference = field_reference(small, small_labels) if field is None else \
        field_reference(*to_window_scale(image, field, config, diameter))
    return cell_windows(small, small_labels, config), reference


def classify(classifier: CellClassifier, image: np.ndarray, labels: np.ndarray,
             diameter: float, batch: int = 256, field: np.ndarray | None = None
             ) -> CellCalls:
    """Class probabilities of every cell of an image, whether each is unlike what the
    classifier learnt, and its features.

    Args:
        classifier: the trained classifier (eval mode is set here).
        image: (H, W, 3) uint8, normalised as the segmentation model saw it.
        labels: (H, W) int cells 1..N.
        diameter: px, the image's cell diameter.
        batch: windows per forward pass.
        field: (H, W) all the field's cells, where ``labels`` holds only some of them
            (a few, joined): each cell is judged against the field's cells
            (:func:`field_reference`); default: ``labels``.

    Returns:
        The cells' :class:`CellCalls`.
    """
    classifier.eval()
    config = classifier.config
    windows, reference = field_windows(config, image, labels, diameter, field)
    out, far, kept = [], [], []
    with torch.no_grad():
        for start in range(0, len(windows), batch):
            part = windows[start:start + batch]
            features = classifier.features(input_tensor(part, np.repeat(
                reference[None], len(part), axis=0), config.inputs))
            p = (classifier.out(features) / config.temperature).softmax(dim=1)
            out.append(p)
            kept.append(classifier.scaled(features))
            if config.distance_limit > 0:
                d = classifier.distances(features).gather(1, p.argmax(dim=1, keepdim=True))[:, 0]
                far.append(d > config.distance_limit)
            else:
                far.append(torch.zeros(len(part), dtype=torch.bool))
    if not out:
        return CellCalls(np.zeros((0, len(config.classes)), np.float32), np.zeros(0, bool),
                         np.zeros((0, classifier.centres.shape[1]), np.float32))
    return CellCalls(torch.cat(out).numpy(), torch.cat(far).numpy(), torch.cat(kept).numpy())
