"""Training the cell classifier on the cells a segmentation model finds.

The cells are the segmentation model's own, as ``predict --instances`` gives them (at
the image's estimated cell diameter), so the classifier learns on the cells it will be
shown; each is named by the true box it matches one to one at IoU >= 0.5 (cells matching
no box are left out: their class is unknown). Each training image is also seen through
``views`` other microscopes (:class:`~bloomseg.train.augment.Microscope`: stain, contrast,
tint, blur, noise, JPEG, cell size), normalised as the model normalises.

Every epoch draws the same number of windows of each class (infected cells are about 3%
of red cells), and within a class the same number from each dataset; a red cell of a
dataset whose ``classes.txt`` names no infections teaches "red or infected"
(:func:`~bloomseg.data.vocabulary.allowed_classes`), unless the root is one of normal
blood (``uninfected``: its red cells are uninfected, and so is every cell it has, boxed or
not; an ``uninfected`` folder that is no ``data`` root is a plain folder of images of
blood free of malaria: the segmenter finds its cells and none may be infected). The
epoch kept is the one with the
best mean recall of the kinds on the validation cells, infected cells counted at the
false-call budget (:func:`selection_scores`). Its probabilities are then calibrated on
them (:func:`fit_temperature`), and the infected-cell threshold is chosen for
specificity first: the lowest at which at most ``max_false_calls`` of each dataset's
uninfected red cells are called infected (:func:`tune_infected`); the recall is what that
leaves.

A root of single-cell crops (:mod:`bloomseg.data.crops`, such as ``mpidb_pf``) gives its
cells on smear background, each of its class, at its session's cell diameter.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bloomseg.cells.matching import box_pairs, cell_boxes
from bloomseg.data.boxes import read_boxes, yolo_to_xyxy
from bloomseg.data.crops import is_crops
from bloomseg.data.dataset import has_split, load_or_make_splits, scan_split
from bloomseg.data.images import read_image
from bloomseg.data.vocabulary import CLASSES, STAGES, allowed_classes, read_classes
from bloomseg.errors import ConfigError, DataError
from bloomseg.model.classifier import (
    CellClassifier,
    ClassifierConfig,
    cell_windows,
    field_reference,
    input_tensor,
    to_window_scale,
    window_scale,
)
from bloomseg.model.inputs import normalise
from bloomseg.train.config import HARD_NEGATIVES, ClassesConfig

STAGE_INDEX = [CLASSES.index(s) for s in STAGES]
WINDOWS_FILE = "windows.npz"
"""The run's cell windows, cut once (the segmentation of every image is the slow part)."""


@dataclass
class Windows:
    """Cell windows with their classes.

    Attributes:
        x: (N, 4, crop, crop) uint8 (RGB 0..255, mask 0/1).
        y: (N,) int64 index into CLASSES; :data:`UNBOXED` for a cell no box names (kept
            where its blood holds no malaria: it is then any class but a stage).
        known: (N, len(CLASSES)) bool: the classes the cell's dataset names.
        dataset: (N,) int: which ``--data`` root.
        view: (N,) int: 0 the image itself, 1.. an augmented view.
        reference: (N, 3) float32 the :func:`~bloomseg.model.classifier.field_reference`
            of the window's field, as that view shows it.
        field: (N,) int: which image of its dataset and split the cell is from.
    """

    x: np.ndarray
    y: np.ndarray
    known: np.ndarray
    dataset: np.ndarray
    view: np.ndarray
    reference: np.ndarray
    field: np.ndarray

    FIELDS = ("x", "y", "known", "dataset", "view", "reference", "field")

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, rows) -> Windows:
        return Windows(*(getattr(self, f)[rows] for f in self.FIELDS))

    @staticmethod
    def join(parts: list[Windows], crop: int) -> Windows:
        if not parts:
            return Windows(np.zeros((0, 4, crop, crop), np.uint8), np.zeros(0, np.int64),
                           np.zeros((0, len(CLASSES)), bool), np.zeros(0, int), np.zeros(0, int),
                           np.zeros((0, 3), np.float32), np.zeros(0, int))
        return Windows(*(np.concatenate([getattr(p, f) for p in parts]) for f in Windows.FIELDS))


UNBOXED = -1
"""The class of a cell no true box matched: unknown, unless its blood holds no malaria."""


def split_images(root: str, cfg: ClassesConfig) -> tuple[list, list]:
    """(train samples, validation samples) of a root with boxes: ``ROOT/val`` where it
    exists, else the held-out stems of its ``splits.json``."""
    train = [s for s in scan_split(root, "train", need_mask=False).samples if s.boxes]
    if has_split(root, "val"):
        return train, [s for s in scan_split(root, "val", need_mask=False).samples if s.boxes]
    # a read-only root's new split goes to the run folder, one file per root
    fallback = Path(cfg.out) / (f"splits-{Path(root).name}.json" if len(cfg.data) > 1
                                else "splits.json")
    splits, _ = load_or_make_splits(root, [s.stem for s in train], fallback, cfg.seed,
                                    cfg.val_fraction)
    held = set(splits["val"])
    return [s for s in train if s.stem not in held], [s for s in train if s.stem in held]


def image_windows(segmenter, image: np.ndarray, boxes: np.ndarray, targets: np.ndarray,
                  config: ClassifierConfig, views: int, rng: np.random.Generator,
                  unboxed: bool = False) -> Windows:
    """The windows of an image's cells that match a true box, in the image and in
    ``views`` augmented views.

    Args:
        segmenter: a :class:`~bloomseg.inference.segmenter.Segmenter`.
        image: (H, W, 3) uint8.
        boxes: (M, 4) x0, y0, x1, y1 true boxes; targets: (M,) their class indices.
        config: the classifier's crop and window.
        views: augmented views besides the image.
        rng: draws the views.
        unboxed: every cell the segmenter finds, those matching no box as
            :data:`UNBOXED`.

    Returns:
        The windows (``known`` all False, ``dataset`` and ``field`` 0: the caller's).
    """
    prediction = segmenter.predict(image, instances=True, classes=False)
    labels = prediction.labels
    diameter = prediction.diameter or segmenter.cell_diameter
    pairs = box_pairs(cell_boxes(labels)[0], boxes) if len(boxes) else []
    classes = np.full(int(labels.max()), UNBOXED, np.int64)
    for c, b in pairs:
        classes[c] = targets[b]
    cells = np.arange(len(classes)) if unboxed else np.array([c for c, _ in pairs], int)
    if not len(cells) or diameter is None:
        return Windows.join([], config.crop)
    return cell_views(segmenter.normalise, image, labels, cells, classes[cells], diameter,
                      config, views, rng)


def cell_views(normalising: str, image: np.ndarray, labels: np.ndarray, cells: np.ndarray,
               classes: np.ndarray, diameter: float, config: ClassifierConfig, views: int,
               rng: np.random.Generator) -> Windows:
    """The windows of some cells of an image, in the image and in ``views`` views of it
    through other microscopes (:class:`~bloomseg.train.augment.Microscope`: stain,
    contrast, tint, blur, noise, JPEG, cell size).

    Args:
        normalising: the segmenter's normalisation (``percentile``...).
        image: (H, W, 3) uint8; labels: (H, W) its cells 1..N.
        cells: (K,) 0-based indices of the cells wanted; classes: (K,) their classes.
        diameter: px, the image's cell diameter.
        config: the classifier's crop and window.
        views: augmented views besides the image; rng: draws them.

    Returns:
        K * (views + 1) windows (``known`` all False, ``dataset`` and ``field`` 0).
    """
    from bloomseg.train.augment import AUGMENTATIONS, Microscope

    microscope = Microscope(AUGMENTATIONS)
    parts = []
    for view in range(views + 1):
        seen, size = image, diameter
        if view:
            draws = microscope.draw(rng, float(image.mean()) / 255)
            seen = Microscope.pixelwise(image, draws)
            size = diameter * draws.pop("scale", 1.0)
            if "blur" in draws:  # drawn in full-resolution px, applied at window scale
                draws["blur"] *= window_scale(config, size)
        normalised = normalise(seen, normalising)
        small, small_labels = to_window_scale(normalised, labels, config, size)
        if view:
            small = Microscope.optics(small, draws)
        k = len(cells)
        parts.append(Windows(cell_windows(small, small_labels, config)[cells],
                             np.asarray(classes, np.int64), np.zeros((k, len(CLASSES)), bool),
                             np.zeros(k, int), np.full(k, view),
                             np.repeat(field_reference(small, small_labels)[None], k, axis=0),
                             np.zeros(k, int)))
    return Windows.join(parts, config.crop)


def crop_windows(normalising: str, root: str, split: str, config: ClassifierConfig,
                 views: int, rng: np.random.Generator, progress: bool = True) -> Windows:
    """The windows of a crops root's cells (:mod:`bloomseg.data.crops`): each cell put on
    smear background of a colour drawn around plain background's, at its session's cell
    diameter, in the crop itself and ``views`` augmented views."""
    from tqdm import tqdm

    from bloomseg.data.crops import BACKGROUND, on_background, read_crops

    parts = []
    known = np.isin(np.arange(len(CLASSES)), STAGE_INDEX)
    for crop in tqdm(read_crops(root, split), desc=f"cells of {Path(root).name} {split}",
                     unit="crop", disable=not progress, leave=False):
        # a tint within the backgrounds of the smears here (BBBC041, Raabin, PBC)
        colour = tuple(np.clip(np.array(BACKGROUND) + rng.normal(0, 12, 3), 180, 255))
        image, labels = on_background(read_image(crop.path), colour, rng=rng)
        target = np.array([CLASSES.index(crop.label)])
        cells = cell_views(normalising, image, labels, np.array([0]), target, crop.diameter,
                           config, views, rng)
        cells.known[:] = known
        cells.field[:] = len(parts)
        parts.append(cells)
    return Windows.join(parts, config.crop)


def collect(segmenter, cfg: ClassesConfig, config: ClassifierConfig, split: str,
            log, progress: bool = True) -> Windows:
    """Every matched cell's windows of one split (``train``: with augmented views) of
    every root."""
    from tqdm import tqdm

    parts = []
    rng = np.random.default_rng(cfg.seed)
    for d, root in enumerate(cfg.all_roots):
        if root not in cfg.data:  # a plain folder of blood free of malaria
            cells = plain_windows(segmenter, root, split, cfg, config, rng, progress)
            cells.dataset[:] = d
            parts.append(cells)
            log(f"{Path(root).name} {split}: {int((cells.view == 0).sum())} cells, none "
                "infected")
            continue
        if is_crops(root):
            crops = crop_windows(segmenter.normalise, root, split, config,
                                 cfg.views if split == "train" else 0, rng, progress)
            crops.dataset[:] = d
            parts.append(crops)
            log(f"{Path(root).name} {split}: {int((crops.view == 0).sum())} crops, "
                + ", ".join(f"{c} {n}" for c, n in zip(CLASSES, np.bincount(
                    crops.y[crops.view == 0], minlength=len(CLASSES))) if n))
            continue
        names = read_classes(root)
        healthy = root in cfg.uninfected
        known = known_classes(names.known, healthy)
        train, val = split_images(root, cfg)
        samples = train if split == "train" else val
        found = np.zeros(len(CLASSES) + 1, int)
        for i, sample in enumerate(tqdm(samples, desc=f"cells of {Path(root).name} {split}",
                                        unit="image", disable=not progress, leave=False)):
            image = read_image(sample.image)
            yolo = read_boxes(sample.boxes)
            targets = names.targets(yolo[:, 0])
            cells = image_windows(segmenter, image, yolo_to_xyxy(yolo, *image.shape[:2]),
                                  targets, config, cfg.views if split == "train" else 0, rng,
                                  unboxed=healthy)
            cells.known[:], cells.dataset[:], cells.field[:] = known, d, i
            parts.append(cells)
            found += np.bincount(cells.y[cells.view == 0] + 1, minlength=len(CLASSES) + 1)
        log(f"{Path(root).name} {split}: {len(samples)} images, matched cells "
            + ", ".join(f"{c} {n}" for c, n in zip(CLASSES, found[1:])
                        if names.known[CLASSES.index(c)])
            + (f", unboxed (uninfected) {found[0]}" if healthy else ""))
    return Windows.join(parts, config.crop)


def plain_windows(segmenter, root: str, split: str, cfg: ClassesConfig,
                  config: ClassifierConfig, rng: np.random.Generator,
                  progress: bool = True) -> Windows:
    """Every cell of a plain folder of images of blood free of malaria, as
    :data:`UNBOXED` cells of blood with no stage (``split``: its images by the folder's
    own train/val split, :func:`~bloomseg.data.dataset.load_or_make_splits`)."""
    from tqdm import tqdm

    from bloomseg.data.dataset import load_or_make_splits
    from bloomseg.data.images import expand_inputs

    images = expand_inputs([root])
    fallback = Path(cfg.out) / f"splits-{Path(root).name}.json"
    splits, _ = load_or_make_splits(root, [p.stem for p in images], fallback, cfg.seed,
                                    cfg.val_fraction)
    held = set(splits["val"])
    chosen = [p for p in images if (p.stem in held) == (split == "val")]
    known = known_classes(np.zeros(len(CLASSES), bool), True)
    parts = []
    for i, path in enumerate(tqdm(chosen, desc=f"cells of {Path(root).name} {split}",
                                  unit="image", disable=not progress, leave=False)):
        cells = image_windows(segmenter, read_image(path), np.zeros((0, 4)), np.zeros(0, int),
                              config, cfg.views if split == "train" else 0, rng, unboxed=True)
        cells.known[:], cells.field[:] = known, i
        parts.append(cells)
    return Windows.join(parts, config.crop)


def known_classes(named: np.ndarray, uninfected: bool) -> np.ndarray:
    """(len(CLASSES),) bool: what a root's boxes tell about its cells: the classes it
    names, and every stage where its smears hold no malaria (its red cells are then known
    to be uninfected, where otherwise they may hide an infection)."""
    known = named.copy()
    if uninfected:
        known[STAGE_INDEX] = True
    return known


def window_allowed(windows: Windows) -> np.ndarray:
    """(N, len(CLASSES)) bool: what each window's cell may be
    (:func:`~bloomseg.data.vocabulary.allowed_classes`); an :data:`UNBOXED` cell (of
    blood free of malaria) any class but a stage."""
    unboxed = windows.y == UNBOXED
    allowed = allowed_classes(np.where(unboxed, 0, windows.y), windows.known)
    allowed[unboxed] = ~np.isin(np.arange(len(CLASSES)), STAGE_INDEX)
    return allowed


def hard_negatives(x: np.ndarray, rng: np.random.Generator,
                   kinds: tuple[str, ...] = HARD_NEGATIVES,
                   platelets: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                   ) -> np.ndarray:
    """Red cells changed in ways that are no evidence of a parasite, each by one of
    ``kinds`` (:data:`~bloomseg.train.config.HARD_NEGATIVES`) drawn at random:
    ``dense``, its density multiplied evenly (x1.2 to x2.5: a spherocyte, a thick smear);
    ``filled``, its pale centre filled to the density of the rest of the cell;
    ``blurred``, the window blurred (sigma 1 to 2.5 px of the 64); ``overlapped``, a copy
    of the cell laid over it, 0.5 to 0.9 of its diameter away (densities add where two
    red cells overlap); ``isolated``, everything around the cell made plain background
    with a camera's grain, as single-cell crops are put on it (:func:`crop_windows`): a
    cell alone is no evidence either; ``platelet``, a platelet laid on the cell (its
    density over its own background added, in proportion to the two fields' references,
    centred on a pixel of the cell): a dark dot on a red cell that is no parasite.

    Args:
        x: (N, 4, crop, crop) uint8 windows of red cells.
        rng: draws the kind and its strength.
        kinds: the kinds to draw from.
        platelets: for ``platelet``: (the cells' field references (N, 3), platelet
            windows (M, 4, crop, crop), their references (M, 3)); without them, or
            with no platelet, the kind is skipped.

    Returns:
        The changed copies, uint8.
    """
    from scipy.ndimage import gaussian_filter, shift

    from bloomseg.model.classifier import density_rgb, optical_density

    out = x.copy()
    for i in range(len(out)):
        kind = kinds[int(rng.integers(len(kinds)))]
        cell = out[i, 3] > 0
        if kind == "blurred" or not cell.any():
            sigma = float(rng.uniform(1, 2.5))
            out[i, :3] = np.stack([gaussian_filter(c.astype(np.float32), sigma)
                                   for c in out[i, :3]]).round().clip(0, 255)
            continue
        if kind == "isolated":
            out[i, :3] = _isolated(out[i, :3], cell, rng)
            continue
        if kind == "platelet":
            if platelets is not None and len(platelets[1]):
                j = int(rng.integers(len(platelets[1])))
                out[i, :3] = _platelet_on(out[i, :3], cell, platelets[1][j],
                                          platelets[0][i] / platelets[2][j], rng)
            continue
        if kind == "overlapped":
            density = optical_density(out[i, :3])  # (3, crop, crop)
            diameter = 2 * np.sqrt(cell.sum() / np.pi)
            angle, reach = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 0.9) * diameter
            other = shift(density * cell, (0, reach * np.sin(angle), reach * np.cos(angle)),
                          order=1, mode="constant")
            out[i, :3] = density_rgb(density + other)
            continue
        density = optical_density(out[i, :3].transpose(1, 2, 0)[cell])  # (K, 3)
        if kind == "dense":
            density = density * float(rng.uniform(1.2, 2.5))
        else:  # the pallor: the cell's pixels paler than its median, brought up to it
            density = np.maximum(density, np.median(density, axis=0))
        out[i, :3, cell] = density_rgb(density)
    return out


def _isolated(rgb: np.ndarray, cell: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(3, crop, crop) uint8: ``rgb`` with every pixel outside ``cell`` the window's plain
    background (the median of its brightest quarter outside the cell) plus grain of sd 2."""
    outside = rgb[:, ~cell].astype(np.float32)  # (3, K)
    if not outside.size:
        return rgb
    bright = outside.sum(axis=0) >= np.quantile(outside.sum(axis=0), 0.75)
    colour = np.median(outside[:, bright], axis=1)
    out = rgb.astype(np.float32)
    out[:, ~cell] = colour[:, None] + rng.normal(0, 2, outside.shape)
    return out.round().clip(0, 255).astype(np.uint8)


def _platelet_on(rgb: np.ndarray, cell: np.ndarray, donor: np.ndarray, scale: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """(3, crop, crop) uint8: ``rgb`` with the platelet of window ``donor`` laid on a
    random pixel of ``cell``, turned by one of the 8 flips and rotations; its density
    over its background times ``scale`` (3,) (the host field's reference over the donor
    field's) added to the host's."""
    from bloomseg.model.classifier import density_rgb, optical_density

    body = donor[3] > 0
    if body.sum() < 3 or body.sum() > cell.sum() / 2:  # no platelet, or a clump
        return rgb
    density = optical_density(donor[:3])
    background = np.median(density[:, ~body], axis=1) if (~body).any() else 0.0
    rows, cols = np.nonzero(body)
    top, left = rows.min(), cols.min()
    excess = np.where(body, np.maximum(density - np.asarray(background)[:, None, None], 0), 0)
    excess = excess[:, top:rows.max() + 1, left:cols.max() + 1] * scale[:, None, None]
    k = int(rng.integers(8))
    excess = np.rot90(excess, k % 4, axes=(1, 2))
    excess = excess[:, :, ::-1] if k >= 4 else excess
    h, w = excess.shape[1:]
    ys, xs = np.nonzero(cell)
    at = int(rng.integers(len(ys)))
    y0, x0 = ys[at] - h // 2, xs[at] - w // 2
    size = rgb.shape[1]
    laid = np.zeros((3, size, size), np.float32)
    ty0, tx0, ty1, tx1 = max(y0, 0), max(x0, 0), min(y0 + h, size), min(x0 + w, size)
    laid[:, ty0:ty1, tx0:tx1] = excess[:, ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0]
    return density_rgb(optical_density(rgb) + laid)


def zoomed(x: np.ndarray, rng: np.random.Generator, most: float = 1.8) -> np.ndarray:
    """Windows shown larger: each one's centre enlarged by a factor drawn from 1 to
    ``most`` to the whole window (the cell's mask with it). A white cell of a lab whose
    cells are estimated small, or a large one, fills its window: still a white cell.

    Args:
        x: (N, 4, crop, crop) uint8 windows.
        rng: draws the factors.

    Returns:
        (N, 4, crop, crop) uint8.
    """
    out = np.empty_like(x)
    crop = x.shape[-1]
    for i in range(len(x)):
        side = max(8, int(round(crop / float(rng.uniform(1.0, most)))))
        top = (crop - side) // 2
        part = torch.from_numpy(x[i:i + 1, :, top:top + side, top:top + side].astype(np.float32))
        rgb = F.interpolate(part[:, :3], size=(crop, crop), mode="bilinear", align_corners=False)
        mask = F.interpolate(part[:, 3:], size=(crop, crop), mode="nearest")
        out[i, :3] = rgb[0].round().clamp(0, 255).numpy()
        out[i, 3] = mask[0, 0].numpy()
    return out


def faded(x: np.ndarray, rng: np.random.Generator, low: float = 0.35) -> np.ndarray:
    """Windows whose cell is paler evenly: its optical density times a factor drawn from
    ``low`` to 1 (the background and neighbours kept). Against its field's red cells a
    white cell's nucleus is far denser under one stain than another: its shape, size and
    texture make it white, not its density.

    Args:
        x: (N, 4, crop, crop) uint8 windows.
        rng: draws the factors.

    Returns:
        (N, 4, crop, crop) uint8.
    """
    from bloomseg.model.classifier import density_rgb, optical_density

    out = x.copy()
    for i in range(len(out)):
        cell = out[i, 3] > 0
        density = optical_density(out[i, :3].transpose(1, 2, 0)[cell])  # (K, 3)
        out[i, :3, cell] = density_rgb(density * float(rng.uniform(low, 1.0)))
    return out


PARASITE_LEVEL = 1.5
"""A pixel of an infected cell belongs to its parasite where its optical density is more
than this many times the cell's median (the mean of the three channels)."""
MIN_PARASITE_PIXELS = 4
"""The smallest parasite body kept, in pixels of the 64-pixel window."""


def parasite_excess(window: np.ndarray) -> np.ndarray:
    """(3, crop, crop) float32: what an infected cell's parasite adds to the density of
    its cell, relative to the cell's median density (0 outside the parasite).

    Args:
        window: (4, crop, crop) uint8, an infected cell's window (RGB and mask).
    """
    from scipy.ndimage import binary_dilation, gaussian_filter, label

    from bloomseg.model.classifier import optical_density

    cell = window[3] > 0
    if cell.sum() < 8:
        return np.zeros((3, *cell.shape), np.float32)
    density = optical_density(window[:3])
    relative = density / np.maximum(np.median(density[:, cell], axis=1), 1e-3)[:, None, None]
    # smoothed, so that camera noise is no parasite; bodies of a few pixels at least
    dark = cell & (gaussian_filter(relative.mean(axis=0), 0.8) > PARASITE_LEVEL)
    bodies, count = label(dark)
    sizes = np.bincount(bodies.ravel(), minlength=count + 1)
    dark &= sizes[bodies] >= MIN_PARASITE_PIXELS
    # the dilation keeps the paler edge of a ring or a chromatin dot
    parasite = binary_dilation(dark) & cell
    return np.where(parasite, np.maximum(relative - 1, 0), 0).astype(np.float32)


def transplanted(infected: np.ndarray, hosts: np.ndarray, rng: np.random.Generator
                 ) -> np.ndarray:
    """Infected cells' parasites laid onto uninfected red cells, most often of another
    microscope: the parasite, not the look of the lab it came from, is what makes a cell
    infected. The excess density (:func:`parasite_excess`), turned by a random one of the
    8 flips and rotations, is added to the host's own density in proportion to the host's
    median, inside the host cell.

    Args:
        infected: (N, 4, crop, crop) uint8 windows of infected cells.
        hosts: (N, 4, crop, crop) uint8 windows of uninfected red cells.
        rng: draws the turn.

    Returns:
        (N, 4, crop, crop) uint8: the hosts with the parasites.
    """
    from bloomseg.model.classifier import density_rgb, optical_density

    out = hosts.copy()
    for i in range(len(out)):
        cell = out[i, 3] > 0
        if cell.sum() < 8:
            continue
        k = int(rng.integers(8))
        excess = np.rot90(parasite_excess(infected[i]), k % 4, axes=(1, 2))
        excess = excess[:, :, ::-1] if k >= 4 else excess
        density = optical_density(out[i, :3])
        median = np.median(density[:, cell], axis=1)[:, None, None]
        density = density + excess * median * cell
        out[i, :3] = density_rgb(density)
    return out


def host_draw(hosts: np.ndarray, dataset: np.ndarray, source: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """One host red cell for each transplant: of a dataset other than its source's where
    there is one, the datasets drawn alike (a lab with few red cells as often as one with
    many).

    Args:
        hosts: indices of the windows that may be hosts; dataset: (N,) every window's.
        source: (M,) the dataset each parasite comes from.

    Returns:
        (M,) window indices.
    """
    sets = np.unique(dataset[hosts])
    out = np.empty(len(source), int)
    for i, d in enumerate(source):
        others = sets[sets != d] if len(sets) > 1 else sets
        chosen = others[int(rng.integers(len(others)))]
        pool = hosts[dataset[hosts] == chosen]
        out[i] = pool[int(rng.integers(len(pool)))]
    return out


def batch_tensor(x: np.ndarray, reference: np.ndarray, inputs: str,
                 rng: np.random.Generator | None = None) -> torch.Tensor:
    """uint8 windows -> the classifier's float input
    (:func:`~bloomseg.model.classifier.input_tensor`); with ``rng``, each turned by a
    random one of the 8 flips and rotations."""
    t = input_tensor(x, reference, inputs)
    if rng is not None:
        for i, k in enumerate(rng.integers(0, 8, len(t))):
            v = t[i].rot90(int(k) % 4, dims=(1, 2))
            t[i] = v.flip(2) if k >= 4 else v
    return t


def masked_loss(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """The negative log of the probability that each cell is one of the classes its box
    allows (:func:`~bloomseg.data.vocabulary.allowed_classes`): a red cell of a dataset that
    does not label infections teaches "red or infected", neither one alone."""
    return (torch.logsumexp(logits, dim=1)
            - torch.logsumexp(logits.masked_fill(~allowed, -1e9), dim=1)).mean()


def balanced_draw(classes: np.ndarray, dataset: np.ndarray, count: int,
                  rng: np.random.Generator) -> np.ndarray:
    """``count`` indices of cells of ``classes`` (N,) and ``dataset`` (N,), the same
    number of each class present and, within a class, the same number from each dataset
    that holds it: a microscope with few cells of a class (BBBC041's infected cells
    beside thousands of MP-IDB crops, its crowded red cells beside txlpbc's) weighs as
    much as one with many."""
    # an unboxed cell of healthy blood is drawn as a red cell: most are
    y = np.where(classes == UNBOXED, CLASSES.index("red_blood_cell"), classes)
    present = [c for c in range(len(CLASSES)) if (y == c).any()]
    per = int(np.ceil(count / max(1, len(present))))
    chosen = []
    for c in present:
        sets = np.unique(dataset[y == c])
        each = int(np.ceil(per / len(sets)))
        chosen += [rng.choice(np.flatnonzero((y == c) & (dataset == d)), each)
                   for d in sets]
    return rng.permutation(np.concatenate(chosen))[:count]


def logits_of(model: CellClassifier, windows: Windows, batch: int = 256) -> np.ndarray:
    """(N, len(CLASSES)) the classifier's outputs on the windows, before the softmax."""
    return features_of(model, windows, batch)[0]


def features_of(model: CellClassifier, windows: Windows, batch: int = 256
                ) -> tuple[np.ndarray, np.ndarray]:
    """((N, len(CLASSES)) logits, (N, F) features) of the windows."""
    model.eval()
    logits, features = [], []
    with torch.no_grad():
        for s in range(0, len(windows), batch):
            f = model.features(batch_tensor(windows.x[s:s + batch],
                                            windows.reference[s:s + batch], model.config.inputs))
            features.append(f.numpy())
            logits.append(model.out(f).numpy())
    if not logits:
        return np.zeros((0, len(CLASSES)), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(logits), np.concatenate(features)


def probabilities(model: CellClassifier, windows: Windows, temperature: float = 1.0) -> np.ndarray:
    """(N, len(CLASSES)) softmax of the windows, as a user gets them (no class masked)."""
    return torch.from_numpy(logits_of(model, windows) / temperature).softmax(dim=1).numpy()


def balanced_recall(p: np.ndarray, y: np.ndarray) -> dict:
    """Recall of each kind present (red, infected, white, platelet: the calls a user
    gets, the stages' probabilities summed) and their mean. Stages are not scored apart:
    validation holds one or two cells of some of them."""
    from bloomseg.data.vocabulary import KINDS, kind_of

    kinds = np.stack([p[:, CLASSES.index("red_blood_cell")], p[:, STAGE_INDEX].sum(axis=1),
                      p[:, CLASSES.index("white_blood_cell")], p[:, CLASSES.index("platelet")]],
                     axis=1)
    boxed = np.asarray(y) != UNBOXED
    decided = kinds[boxed].argmax(axis=1)
    truth = np.array([KINDS.index(kind_of(int(c))) for c in np.asarray(y)[boxed]], int)
    recalls = {KINDS[k]: float((decided[truth == k] == k).mean()) for k in range(len(KINDS))
               if (truth == k).any()}
    return {"balanced_recall": float(np.mean(list(recalls.values()))) if recalls else 0.0,
            **{f"recall_{k}": v for k, v in recalls.items()}}


def fit_temperature(logits: np.ndarray, allowed: np.ndarray) -> float:
    """The temperature that calibrates a classifier's probabilities on validation: the
    one of a grid (0.5 to 5) under which the cells' classes are most likely (the negative
    log of the probability of the classes each cell's box allows, as in training).

    Args:
        logits: (N, len(CLASSES)) the classifier's outputs; allowed: (N, len(CLASSES))
            bool (:func:`~bloomseg.data.vocabulary.allowed_classes`).
    """
    t = torch.from_numpy(np.asarray(logits, np.float32))
    mask = torch.from_numpy(allowed)
    grid = np.round(np.exp(np.linspace(np.log(0.5), np.log(5.0), 41)), 3)
    losses = [float(masked_loss(t / float(g), mask)) for g in grid]
    return float(grid[int(np.argmin(losses))])


MIN_RED_FOR_RATE = 100
"""A dataset's false-call rate counts towards the threshold once its validation holds at
least this many uninfected red cells (below it one cell is more than 1%)."""
THRESHOLDS = np.round(np.concatenate([np.arange(0.05, 0.9, 0.05), np.arange(0.9, 0.99, 0.01),
                                      [0.99, 0.995, 0.998, 0.999]]), 3)
"""The infected thresholds tried, finer where a strict false-call budget puts them."""


def tune_infected(p: np.ndarray, y: np.ndarray, max_false: float = 0.002,
                  dataset: np.ndarray | None = None) -> tuple[float, list[dict]]:
    """The infected threshold (on the stages' summed probability, see
    :func:`~bloomseg.cells.types.infected_calls`): specificity first, the lowest one at
    which at most ``max_false`` of the validation's uninfected red cells are called
    infected, pooled and **in every dataset** with at least :data:`MIN_RED_FOR_RATE` of
    them: a rate pooled over datasets lets a microscope of easy red cells hide one whose
    crowded cells are called infected three times as often. The recall is what that
    leaves.

    Args:
        p: (N, len(CLASSES)) calibrated probabilities; y: (N,) true classes
            (:data:`UNBOXED`: a cell of blood free of malaria, counted as an uninfected
            red cell: most are, and none may be called infected).
        max_false: the false-call rate allowed on uninfected red cells.
        dataset: (N,) which dataset each cell comes from; None: one dataset.

    Returns:
        (threshold, one row per threshold tried: red cells and infected cells, calls, the
        worst dataset's false-call rate, the pooled one, precision, recall); the highest
        tried where none keeps the rate.
    """
    from bloomseg.cells.types import infected_calls

    dataset = np.zeros(len(y), int) if dataset is None else np.asarray(dataset)
    red = np.isin(y, [CLASSES.index("red_blood_cell"), UNBOXED] + STAGE_INDEX)
    truth = np.isin(y[red], STAGE_INDEX)
    sets = [d for d in np.unique(dataset[red])
            if ((dataset[red] == d) & ~truth).sum() >= MIN_RED_FOR_RATE]
    rows = []
    for t in THRESHOLDS:
        called = infected_calls(p[red], float(t))
        false = called & ~truth
        tp = int((called & truth).sum())
        pooled = false.sum() / max(1, (~truth).sum())
        worst = max([pooled] + [false[dataset[red] == d].sum() / (~truth[dataset[red] == d]).sum()
                                for d in sets])
        rows.append({"threshold": float(t), "red": int((~truth).sum()), "infected": int(truth.sum()),
                     "called": int(called.sum()), "false_call_rate": float(worst),
                     "false_call_rate_pooled": float(pooled),
                     "precision": float(tp / called.sum()) if called.sum() else 1.0,
                     "recall": float(tp / truth.sum()) if truth.sum() else 1.0})
    kept = [r["threshold"] for r in rows if r["false_call_rate"] <= max_false]
    return (kept[0] if kept else rows[-1]["threshold"]), rows


def selection_scores(p: np.ndarray, windows: Windows, max_false: float) -> dict:
    """An epoch's validation scores: the recall of each kind (:func:`balanced_recall`),
    the infected recall at the threshold that keeps ``max_false`` in every dataset
    (:func:`tune_infected`), and ``selection``, the kinds' mean recall with infected
    counted at that threshold: the epoch kept is the one that finds infected cells
    without false calls, not the one whose likeliest class is most often right."""
    scores = balanced_recall(p, windows.y)
    threshold, rows = tune_infected(p, windows.y, max_false, windows.dataset)
    at_budget = next(r for r in rows if r["threshold"] == threshold)["recall"]
    kinds = {k: v for k, v in scores.items() if k.startswith("recall_")}
    if "recall_infected" in kinds:
        kinds["recall_infected"] = at_budget
    return {**scores, "infected_at_budget": at_budget,
            "selection": float(np.mean(list(kinds.values()))) if kinds else 0.0}


@dataclass
class ClassesResult:
    """A finished classifier run: its folder, best epoch, validation scores, threshold."""

    run_dir: Path
    best_epoch: int
    scores: dict
    infected_threshold: float


def train_classes(cfg: ClassesConfig, progress: bool = True, overwrite: bool = False,
                  resume: bool = False) -> ClassesResult:
    """Train a cell classifier on a segmentation model's cells; everything goes into the
    run folder ``cfg.out`` (config.json, train.log, windows.npz, history.csv, best.pt,
    last.pt, infected_tuning.csv, val_confusion.json).

    Args:
        cfg: the settings.
        progress: progress bars and per-epoch lines.
        overwrite: start afresh in a folder that holds a run.
        resume: continue the run in ``cfg.out`` from its last.pt (its windows reused).

    Raises:
        ConfigError, DataError, CheckpointError, OutputExistsError: before training starts.
    """
    from bloomseg.files import refuse_existing, save_json
    from bloomseg.inference.segmenter import Segmenter

    cfg.check()
    run = Path(cfg.out)
    if not resume:
        refuse_existing([run / "best.pt", run / "last.pt", run / WINDOWS_FILE], overwrite)
    run.mkdir(parents=True, exist_ok=True)
    for root in cfg.data:
        if not is_crops(root):
            read_classes(root)  # a bad classes.txt is refused before any work
    segmenter = Segmenter.load(cfg.model)
    if segmenter.cell_diameter is None:
        raise ConfigError(f"--model {cfg.model}: the model does not record its cell diameter; "
                          "its cells cannot be brought to one size for a classifier")
    config = classifier_config(cfg)
    log = run_log(run / "train.log", progress)
    save_json(run / "config.json", {"classes": asdict(cfg), "classifier": config.as_dict(),
                                    "segmentation_model": str(cfg.model)})
    train, val = _windows(segmenter, cfg, config, run, log, progress, resume and not overwrite)
    return fit_classes(train, val, cfg, run, log, resume)


def classifier_config(cfg: ClassesConfig) -> ClassifierConfig:
    """The classifier a run's settings build (before its threshold is tuned)."""
    return ClassifierConfig(width=cfg.width, inputs=cfg.inputs)


def run_log(path: Path, progress: bool):
    """A function that appends a time-stamped line to ``path`` (and prints it with
    ``progress``)."""
    def log(line: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
        with open(path, "a", encoding="utf-8") as f:
            f.write(stamped + "\n")
        if progress:
            print(stamped, flush=True)
    return log


DISTANCE_QUANTILE = 0.995
"""The limit of a cell's distance from its class's centre beyond which it is unfamiliar:
this quantile of the validation cells' distances from the centre of the class they are
called. Not tuned: ``benchmarks/classes_unseen.py`` reports the share of a left-out lab's
false and true infected calls it marks."""


def fit_classes(train: Windows, val: Windows, cfg: ClassesConfig, run: Path, log,
                resume: bool = False) -> ClassesResult:
    """Train a classifier on cut windows: the epochs, the best one kept, its temperature,
    its class centres and distance limit, and its infected threshold; written to ``run``.

    Args:
        train, val: the windows (:class:`Windows`); train's views are drawn from.
        cfg: the settings (epochs, batches, optimiser, inputs, hard negatives, budget).
        run: the run folder; log: :func:`run_log`.
        resume: continue from ``run/last.pt``.

    Raises:
        DataError: no train or no validation windows.
    """
    from bloomseg.files import save_csv, save_json
    from bloomseg.model.files import read_classifier_file, save_classifier

    if not len(train) or not len(val):
        raise DataError(f"no cells matched a true box in the {'train' if not len(train) else 'val'} "
                        f"images of {', '.join(cfg.data)}")
    config = classifier_config(cfg)
    torch.manual_seed(cfg.seed)
    model = CellClassifier(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, cfg.epochs)
    history: list[dict] = []
    if resume and (run / "last.pt").is_file():
        payload = read_classifier_file(run / "last.pt")
        model.load_state_dict(payload["state"])
        optimiser.load_state_dict(payload["optimiser"])
        schedule.load_state_dict(payload["schedule"])
        history = payload["history"]
        log(f"resuming after epoch {len(history)}")
    allowed = window_allowed(train)
    # hard negatives only where the cell is known to be an uninfected red cell
    red_only = allowed[:, CLASSES.index("red_blood_cell")] & (allowed.sum(axis=1) == 1)
    infected = allowed[:, STAGE_INDEX].any(axis=1) & (allowed.sum(axis=1) == 1)
    hosts = np.flatnonzero(red_only & (train.view == 0))
    lying = train.y == CLASSES.index("platelet")  # laid on red cells by hard negatives
    platelets = (train.x[lying], train.reference[lying]) if "platelet" in cfg.hard_kinds else None
    white = train.y == CLASSES.index("white_blood_cell")
    # white cells that fill their window, or with a paler nucleus than the labs learnt,
    # are still white
    white_changes = ((cfg.zoomed_white, zoomed), (cfg.faded_white, faded))
    rng = np.random.default_rng(cfg.seed + len(history))
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        if history and cfg.early_stopping and \
                epoch - 1 - _best(history)["epoch"] >= cfg.early_stopping:
            log(f"early stop: no better selection score for {cfg.early_stopping} epochs")
            break
        start, losses = time.perf_counter(), []
        model.train()
        order = balanced_draw(train.y, train.dataset, cfg.items_per_epoch, rng)
        for s in range(0, len(order), cfg.batch_size):
            chosen = order[s:s + cfg.batch_size]
            x = train.x[chosen]  # a copy: chosen indexes
            reference = train.reference[chosen]
            if cfg.hard_negatives:  # uninfected red cells made to look unlike themselves
                hard = np.flatnonzero(red_only[chosen] & (rng.random(len(chosen)) < cfg.hard_negatives))
                if hard.size:
                    laid = (reference[hard], *platelets) if platelets else None
                    x[hard] = hard_negatives(x[hard], rng, cfg.hard_kinds, laid)
            for share, change in white_changes:
                if share:
                    some = np.flatnonzero(white[chosen] & (rng.random(len(chosen)) < share))
                    if some.size:
                        x[some] = change(x[some], rng)
            if cfg.transplants and len(hosts):  # parasites moved onto other labs' red cells
                moved = np.flatnonzero(infected[chosen] & (rng.random(len(chosen)) < cfg.transplants))
                if moved.size:
                    host = host_draw(hosts, train.dataset, train.dataset[chosen[moved]], rng)
                    x[moved] = transplanted(x[moved], train.x[host], rng)
                    reference[moved] = train.reference[host]
            loss = masked_loss(model(batch_tensor(x, reference, config.inputs, rng)),
                               torch.from_numpy(allowed[chosen]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        schedule.step()
        scores = selection_scores(probabilities(model, val), val, cfg.max_false_calls)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), **scores,
                        "lr": optimiser.param_groups[0]["lr"],
                        "seconds": round(time.perf_counter() - start, 1)})
        log(f"epoch {epoch}/{cfg.epochs}: train loss {history[-1]['train_loss']:.4f}, val "
            + ", ".join(f"{k.removeprefix('recall_')} {v:.3f}" for k, v in scores.items()))
        info = {"config": config.as_dict(), "history": history}
        if _best(history)["epoch"] == epoch:
            save_classifier(run / "best.pt", model, info)
        save_classifier(run / "last.pt", model, info | {
            "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict()})
        save_csv(run / "history.csv", history, list(dict.fromkeys(k for r in history for k in r)))
    best = _best(history)
    payload = read_classifier_file(run / "best.pt")
    model.load_state_dict(payload["state"])
    temperature = fit_temperature(logits_of(model, val), window_allowed(val))
    p = probabilities(model, val, temperature)
    threshold, rows = tune_infected(p, val.y, cfg.max_false_calls, val.dataset)
    save_csv(run / "infected_tuning.csv", rows, list(rows[0]))
    chosen = next(r for r in rows if r["threshold"] == threshold)
    log(f"temperature {temperature:g}; infected threshold {threshold}: val infected recall "
        f"{chosen['recall']:.3f}, at most {chosen['false_call_rate']:.2%} of a dataset's "
        f"uninfected red cells called infected (allowed {cfg.max_false_calls:.2%}; "
        f"{chosen['false_call_rate_pooled']:.2%} of all {chosen['red']}), precision "
        f"{chosen['precision']:.3f} ({chosen['infected']} infected cells)")
    limit = set_centres(model, train, val)
    log(f"class centres from {int((train.view == 0).sum())} training cells; a cell further "
        f"than {limit:.3g} from its class's centre is unfamiliar ({DISTANCE_QUANTILE:.1%} "
        "of the validation cells are nearer)")
    labs = set_labs(model, train)
    log(f"red-cell profiles of {labs} training datasets kept (a run is judged against them)")
    memory = keep_memory(model, train, val, cfg.seed)
    log(f"{memory} cells' features kept in memory (adapting to a user's cells replays them)")
    config = replace(config, infected_threshold=threshold, temperature=temperature,
                     distance_limit=limit, labs=labs, memory=memory,
                     max_false_calls=cfg.max_false_calls,
                     lab_names=tuple(Path(r).name for r in cfg.all_roots))
    model.config = config
    save_classifier(run / "best.pt", model, {"config": config.as_dict(), "history": history})
    confusion = np.zeros((len(CLASSES), len(CLASSES)), int)
    boxed = val.y != UNBOXED
    np.add.at(confusion, (val.y[boxed], p[boxed].argmax(axis=1)), 1)
    save_json(run / "val_confusion.json", {"classes": list(CLASSES), "rows_true_columns_predicted":
                                           confusion.tolist()})
    log(f"done: best selection score {best['selection']:.4f} at epoch {best['epoch']} "
        f"-> {run / 'best.pt'}")
    scores = {k: v for k, v in best.items()
              if k.startswith(("recall", "balanced", "selection", "infected"))}
    return ClassesResult(run, best["epoch"], scores, threshold)


def set_centres(model: CellClassifier, train: Windows, val: Windows) -> float:
    """Store each class's centre and the features' spread from the training cells (the
    images themselves, not their augmented views), and return the distance limit: the
    :data:`DISTANCE_QUANTILE` of the validation cells' distances from the centre of the
    class they are called."""
    seen = train[train.view == 0]
    boxed = seen[seen.y != UNBOXED]
    features = features_of(model, boxed)[1]
    centres = torch.zeros_like(model.centres)
    for c in range(len(CLASSES)):
        if (boxed.y == c).any():
            centres[c] = torch.from_numpy(features[boxed.y == c].mean(axis=0))
    spread = np.sqrt(np.mean((features - centres.numpy()[boxed.y]) ** 2, axis=0)) + 1e-3
    model.centres.copy_(centres)
    model.spread.copy_(torch.from_numpy(spread.astype(np.float32)))
    logits, val_features = features_of(model, val)
    with torch.no_grad():
        d = model.distances(torch.from_numpy(val_features)).numpy()
    return float(np.quantile(d[np.arange(len(d)), logits.argmax(axis=1)], DISTANCE_QUANTILE))


MEMORY_PER = 150
"""Training cells kept in a classifier's memory per class and lab (with every
validation cell): enough to replay each lab's classes beside a user's corrected cells."""


def keep_memory(model: CellClassifier, train: Windows, val: Windows, seed: int = 0) -> int:
    """Keep features of training and validation cells in the classifier
    (:meth:`~bloomseg.model.classifier.CellClassifier.set_memory`): up to
    :data:`MEMORY_PER` training cells of each class and lab (the images themselves, not
    their views), and every validation cell (the infected threshold is checked on them
    again after adapting, as it was chosen on them).

    Returns:
        The cells kept.
    """
    rng = np.random.default_rng(seed)
    seen = np.flatnonzero(train.view == 0)
    kept = []
    for c in np.unique(train.y[seen]):
        for d in np.unique(train.dataset[seen]):
            rows = seen[(train.y[seen] == c) & (train.dataset[seen] == d)]
            kept.append(rng.choice(rows, min(len(rows), MEMORY_PER), replace=False))
    chosen = Windows.join([train[np.sort(np.concatenate(kept))], val], train.x.shape[-1])
    features = features_of(model, chosen)[1]
    is_val = np.arange(len(chosen)) >= len(chosen) - len(val)
    model.set_memory(torch.from_numpy(features), torch.from_numpy(chosen.y),
                     torch.from_numpy(window_allowed(chosen)), torch.from_numpy(chosen.dataset),
                     torch.from_numpy(is_val))
    return len(chosen)


def turned_features(model: CellClassifier, cells: Windows) -> torch.Tensor:
    """(8, N, F) the features of each cell in its 8 flips and quarter turns: a few
    corrected cells shown every way they could lie."""
    model.eval()
    t = input_tensor(cells.x, cells.reference, model.config.inputs)
    with torch.no_grad():
        return torch.stack([model.features(v.flip(3) if k >= 4 else v) for k in range(8)
                            for v in [t.rot90(k % 4, dims=(2, 3))]])


ADAPT_STEPS, ADAPT_LR, ADAPT_ANCHOR, ADAPT_BATCH = 150, 1e-3, 100.0, 64
"""The recipe for a few corrected fields, chosen by leaving a lab out
(``benchmarks/classes_unseen.py adapt``): the last layer learns the user's cells beside
as many replayed memory cells a step, drawn back to where it started."""


def adapt_classifier(model: CellClassifier, cells: Windows, steps: int = ADAPT_STEPS,
                     lr: float = ADAPT_LR, anchor: float = ADAPT_ANCHOR,
                     batch: int = ADAPT_BATCH, seed: int = 0) -> CellClassifier:
    """A trained classifier adapted to a few corrected cells, in place.

    Only the last layer learns, so the cells' features are computed once (each cell in
    its 8 flips and turns) and every step is cheap. Each step shows a batch of the
    user's cells (each class drawn alike) and as many of the classifier's memory
    (:func:`keep_memory`; none in a classifier from before it), so that it learns the
    user's lab without forgetting the others; the weights are drawn back towards where
    they started (the start model's knowledge is the prior a few cells refine). The
    temperature, class centres, labs and memory are kept (their features do not move).

    Args:
        model: the classifier to adapt.
        cells: the user's cells, ``y`` what the user says each is.
        steps, lr, batch, seed: the optimisation.
        anchor: the weight of the squared distance of the weights from where they started.

    Returns:
        The model, adapted, in eval mode.

    Raises:
        DataError: no cells.
    """
    if not len(cells):
        raise DataError("no corrected cells to adapt the classifier to")
    features = turned_features(model, cells).flatten(0, 1)
    allowed = torch.from_numpy(np.tile(window_allowed(cells), (8, 1)))
    y, lab = np.tile(cells.y, 8), np.zeros(8 * len(cells), int)
    train = ~model.memory_val
    memory = model.memory_features[train].float()
    memory_allowed = model.memory_allowed[train]
    memory_y, memory_lab = model.memory_classes[train].numpy(), model.memory_labs[train].numpy()
    params = list(model.out.parameters())
    start = [q.detach().clone() for q in params]
    optimiser = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        chosen = balanced_draw(y, lab, batch, rng)
        loss = masked_loss(model.out(features[chosen]), allowed[chosen])
        if len(memory):
            more = balanced_draw(memory_y, memory_lab, batch, rng)
            loss = loss + masked_loss(model.out(memory[more]), memory_allowed[more])
        loss = loss + anchor * sum(((q - q0) ** 2).sum() for q, q0 in zip(params, start))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def memory_scores(model: CellClassifier) -> dict[int, dict]:
    """Per lab of a classifier's memory (:func:`keep_memory`), its validation cells at
    the classifier's threshold: ``infected_found`` and ``red_called_infected`` (NaN
    where the lab has none of those cells); empty without a memory."""
    from bloomseg.cells.types import infected_calls

    val = model.memory_val
    with torch.no_grad():
        p = (model.out(model.memory_features[val].float()) / model.config.temperature
             ).softmax(dim=1).numpy()
    y, lab = model.memory_classes[val].numpy(), model.memory_labs[val].numpy()
    called = infected_calls(p, model.config.infected_threshold)
    out = {}
    for d in np.unique(lab):
        here = lab == d
        truth = here & np.isin(y, STAGE_INDEX)
        red = here & np.isin(y, [CLASSES.index("red_blood_cell"), UNBOXED])
        out[int(d)] = {"infected_found": float(called[truth].mean()) if truth.any() else np.nan,
                       "red_called_infected": float(called[red].mean()) if red.any() else np.nan}
    return out


KEEP_RECALL = 0.9
"""A threshold raised above a user's corrected cells may cost at most this share of the
memory's infected recall: beyond it the threshold stays, and the cells still called
infected are said (correct more fields)."""


@dataclass
class ThresholdCheck:
    """The infected threshold checked again after adapting.

    Attributes:
        threshold: the threshold chosen.
        start: the classifier's before.
        still_called: the user's cells said not to be infected that it still calls so.
        recall: the memory's validation infected recall at it (None: no memory, or none
            infected there).
        false_calls: the worst memory lab's share of uninfected red cells called
            infected at it (None: no memory).
    """

    threshold: float
    start: float
    still_called: int
    recall: float | None = None
    false_calls: float | None = None


def recheck_threshold(model: CellClassifier, cells: Windows) -> ThresholdCheck:
    """The infected threshold checked again on the memory's validation cells and the
    user's cells, as training chose it (:func:`tune_infected`: the lowest that calls at
    most ``max_false_calls`` of each lab's uninfected red cells infected, the user's
    cells a lab of their own), then raised above every cell the user says is not
    infected where that keeps :data:`KEEP_RECALL` of the recall. A classifier without
    memory keeps its threshold, raised above the user's cells.

    Args:
        model: the adapted classifier; cells: the user's cells.
    """
    config = model.config
    start = config.infected_threshold
    p_user = (model.out(turned_features(model, cells)[0]) / config.temperature).softmax(dim=1)
    infected = p_user.detach().numpy()[:, STAGE_INDEX].sum(axis=1)
    clean = ~np.isin(cells.y, STAGE_INDEX)
    worst = float(infected[clean].max()) if clean.any() else 0.0
    above = [float(t) for t in THRESHOLDS if t > worst] or [float(THRESHOLDS[-1])]
    checked = model.memory_val
    if not checked.any():
        threshold = max(start, above[0])
        return ThresholdCheck(threshold, start, int((infected[clean] >= threshold).sum()))
    with torch.no_grad():
        p = (model.out(model.memory_features[checked].float()) / config.temperature).softmax(dim=1)
    labs = model.memory_labs[checked].numpy()
    p_all = np.concatenate([p.numpy(), p_user.detach().numpy()])
    y = np.concatenate([model.memory_classes[checked].numpy(), cells.y])
    dataset = np.concatenate([labs, np.full(len(cells), labs.max() + 1)])
    base, rows = tune_infected(p_all, y, config.max_false_calls, dataset)
    at = {r["threshold"]: r for r in rows}
    threshold = base
    if worst > base:
        raised = next(t for t in above if t in at)
        if at[raised]["recall"] >= KEEP_RECALL * at[base]["recall"]:
            threshold = raised
    row = at[threshold]
    return ThresholdCheck(threshold, start, int((infected[clean] >= threshold).sum()),
                          row["recall"] if row["infected"] else None, row["false_call_rate"])


MIN_LAB_FIELDS = 5
"""A training dataset's red-cell profile is kept where this many of its fields have one."""


def set_labs(model: CellClassifier, train: Windows) -> int:
    """Keep each training dataset's red-cell profile in the classifier
    (:meth:`~bloomseg.model.classifier.CellClassifier.set_labs`): every field's
    :func:`~bloomseg.model.classifier.red_profile` (the training images themselves, not
    their views), their mean per dataset, and how far a field's profile lies from it.
    A dataset of single-cell crops has no fields of red cells and is left out.

    Returns:
        The datasets kept.
    """
    from bloomseg.model.classifier import red_profile

    seen = train[train.view == 0]
    logits, features = features_of(model, seen)
    features = model.scaled(torch.from_numpy(features)).numpy()
    centres, scatter = [], []
    for d in np.unique(seen.dataset):
        profiles = []
        for f in np.unique(seen.field[seen.dataset == d]):
            field = (seen.dataset == d) & (seen.field == f)
            profiles.append(red_profile(logits[field], features[field]))
        profiles = np.array([q for q in profiles if q is not None])
        if len(profiles) < MIN_LAB_FIELDS:
            continue
        centre = profiles.mean(axis=0)
        centres.append(centre)
        scatter.append(np.sqrt(np.mean((profiles - centre) ** 2, axis=1)).mean())
    width = model.centres.shape[1]
    model.set_labs(torch.from_numpy(np.array(centres, np.float32).reshape(-1, width)),
                   torch.tensor(scatter, dtype=torch.float32))
    return len(centres)


def _best(history: list[dict]) -> dict:
    # a run resumed from before the selection score existed is still chosen as it was
    return max(history, key=lambda r: r.get("selection", r["balanced_recall"]))


def _windows(segmenter, cfg: ClassesConfig, config: ClassifierConfig, run: Path, log,
             progress: bool, reuse: bool) -> tuple[Windows, Windows]:
    """The train and validation windows: cut from the data, or read back from the run's
    windows.npz when resuming."""
    from bloomseg.files import atomic_output

    path = run / WINDOWS_FILE
    fields = Windows.FIELDS
    if reuse and path.is_file():
        with np.load(path) as saved:
            if all(f"train_{f}" in saved for f in fields):  # else cut again: an older run's
                return tuple(Windows(*(saved[f"{split}_{f}"] for f in fields))
                             for split in ("train", "val"))
    train = collect(segmenter, cfg, config, "train", log, progress)
    val = collect(segmenter, cfg, config, "val", log, progress)
    with atomic_output(path) as f:
        np.savez(f, **{f"{split}_{f}": getattr(w, f) for split, w in
                       (("train", train), ("val", val)) for f in fields})
    log(f"windows: {len(train)} train (with {cfg.views} augmented views per image), "
        f"{len(val)} val -> {path}")
    return train, val
