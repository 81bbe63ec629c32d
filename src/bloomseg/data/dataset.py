"""Dataset folders: images paired with masks and boxes, and the train/val split.

Layout (the Kaggle "BCCD dataset with mask" download and ../shared/data/bbbc041seg)::

    ROOT/{train,val,test}/original/<stem>.{png,jpg,jpeg,tif,tiff}
    ROOT/{train,val,test}/mask/<stem>.png          two values: cell > 127 (0/255), or 0/1
    ROOT/{train,val,test}/boxes/<stem>.txt         YOLO "class cx cy w h" per cell
    ROOT/{train,val,test}/labels/<stem>.{tif,png}  optional instance labels (0 background)

or, as ``predict --cells`` and napari's Save write cells, one flat folder of training
images, each with its instance labels beside it::

    ROOT/<stem>.{png,jpg,jpeg,tif,tiff}  and  ROOT/<stem>_labels.tif

(other files there, such as ``<stem>_overlay.png``, are left alone). Evaluation needs
masks; training takes an image with a mask, its boxes, its instance labels (mask and boxes
both come from them), or several (../shared/data/txlpbc has boxes only). ``val`` is
optional: without it, a seeded share of ``train`` is held out (``splits.json``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bloomseg.data.images import IMAGE_SUFFIXES, MAX_PIXELS, read_image, read_labels
from bloomseg.errors import DataError, OutputError
from bloomseg.files import save_json

SPLITS_FILE = "splits.json"
LABELS_END = "_labels.tif"
"""How an image's instance label file is named beside it (``<stem>_labels.tif``)."""
CLASS_NAMES = {0: "red blood cell", 1: "trophozoite", 2: "ring", 3: "schizont", 4: "gametocyte",
               5: "leukocyte"}
"""Box classes of BBBC041 (../shared/data); other datasets show as "class N"."""


@dataclass(frozen=True)
class Sample:
    """One image of a dataset and its annotations (None where absent)."""

    stem: str
    image: Path
    mask: Path | None = None
    boxes: Path | None = None
    labels: Path | None = None

    @property
    def masked(self) -> bool:
        """Its cells' pixels are known: from a mask, or from instance labels."""
        return self.mask is not None or self.labels is not None


@dataclass
class Scan:
    """What a split folder holds.

    Attributes:
        samples: images that have a mask (or, where masks are not needed, a mask or
            boxes), sorted by stem.
        images_without_masks: stems of images with no mask (no mask and no boxes, where
            masks are not needed).
        masks_without_images: stems of masks with no image.
    """

    samples: list[Sample] = field(default_factory=list)
    images_without_masks: list[str] = field(default_factory=list)
    masks_without_images: list[str] = field(default_factory=list)
    need_mask: bool = True

    def problems(self) -> str:
        """The orphans as one readable line ('' if none)."""
        parts = []
        if self.images_without_masks:
            what = "masks" if self.need_mask else "masks or boxes"
            parts.append(f"images without {what}: {', '.join(self.images_without_masks)}")
        if self.masks_without_images:
            parts.append(f"masks without images: {', '.join(self.masks_without_images)}")
        return "; ".join(parts)


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        # a broken or looping link is kept, so reading it names the problem
        if not (path.is_file() or path.is_symlink()) or path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise DataError(f"{found[path.stem]} and {path}: two files for one image stem")
        found[path.stem] = path
    return found


def scan_split(root: str | Path, split: str = "train", need_mask: bool = True) -> Scan:
    """Pair the images of ``root/split/original`` with their masks and boxes.

    Args:
        root: the dataset folder.
        split: ``train``, ``val`` or ``test``.
        need_mask: only images with a mask are samples; else an image with boxes and no
            mask is one too (training learns its mask from the boxes).

    Raises:
        DataError: the folder is missing or holds no images.
    """
    if is_flat(root):
        return _scan_flat(Path(root), split)
    folder = Path(root) / split
    originals = folder / "original"
    if not originals.is_dir():
        raise DataError(f"{originals}: no such folder (expected ROOT/{{train,test}}/original/, "
                        f"or images with their <stem>{LABELS_END} in ROOT)")
    images = _by_stem(originals, IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{originals}: no images ({', '.join(IMAGE_SUFFIXES)})")
    masks = _by_stem(folder / "mask", IMAGE_SUFFIXES)
    boxes = _by_stem(folder / "boxes", (".txt",))
    labels = _by_stem(folder / "labels", (".tif", ".tiff", ".png"))
    labelled = masks.keys() if need_mask else masks.keys() | boxes.keys() | labels.keys()
    return Scan(
        samples=[Sample(s, images[s], masks.get(s), boxes.get(s), labels.get(s))
                 for s in images if s in labelled],
        images_without_masks=[s for s in images if s not in labelled],
        masks_without_images=[s for s in masks if s not in images],
        need_mask=need_mask,
    )


def is_flat(root: str | Path) -> bool:
    """Whether ``root`` is one flat folder of images and their ``<stem>_labels.tif`` (no
    ``train/original`` folder)."""
    root = Path(root)
    return (root.is_dir() and not (root / "train" / "original").is_dir()
            and any(root.glob(f"*{LABELS_END}")))


def _scan_flat(root: Path, split: str) -> Scan:
    """A flat folder's samples: every image with a ``<stem>_labels.tif`` beside it (the
    folder is all ``train``; other images there are outputs, not orphans)."""
    if split != "train":
        raise DataError(f"{root}: a folder of images and their labels holds only training "
                        f"images, no {split}/ split")
    labels = {p.name[: -len(LABELS_END)]: p for p in sorted(root.glob(f"*{LABELS_END}"))}
    images = {s: p for s, p in _by_stem(root, IMAGE_SUFFIXES).items() if s in labels}
    return Scan(samples=[Sample(s, images[s], labels=labels[s]) for s in images],
                masks_without_images=[f"{s}{LABELS_END}" for s in labels if s not in images],
                need_mask=False)


def read_mask(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """A cell mask as bool (H, W).

    A mask holds two values, background and cell (taking the largest channel of each
    pixel): cell is above 127 (0/255 masks), or 1 in a 0/1 mask.

    Raises:
        DataError: naming the file, for a mask of more values (anti-aliased, JPEG-
            compressed, or instance labels) or of two on the same side of 127.
    """
    grey = read_image(path, max_pixels).max(axis=2)
    values = np.flatnonzero(np.bincount(grey.ravel(), minlength=256))
    listed = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
    if len(values) > 2:
        raise DataError(f"{path}: a mask holds two values, background and cell (0/255 or 0/1), "
                        f"but this one holds {len(values)} ({listed}); save it without "
                        "anti-aliasing or JPEG compression (cell instance labels go in labels/)")
    if tuple(values) == (0, 1):
        return grey == 1
    if len(values) == 2 and not values[0] <= 127 < values[1]:
        raise DataError(f"{path}: the mask's two values ({listed}) are on the same side of 127, "
                        "so cell and background cannot be told apart (use 0/255 or 0/1)")
    return grey > 127


def load_sample(sample: Sample, max_pixels: int | None = MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask of a sample (larger than ``max_pixels``: refused, see
    :func:`bloomseg.data.images.read_image`).

    Returns:
        (H, W, 3) uint8 image, (H, W) bool mask.

    Raises:
        DataError: the mask's size differs from the image's (both files named).
    """
    if not sample.masked:
        raise DataError(f"{sample.image}: no mask")
    image = read_image(sample.image, max_pixels)
    source = sample.mask if sample.mask is not None else sample.labels
    mask = read_mask(source, max_pixels) if sample.mask is not None else \
        read_labels(source) > 0
    if mask.shape != image.shape[:2]:
        raise DataError(
            f"{source}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{sample.image} is {image.shape[1]}x{image.shape[0]}"
        )
    return image, mask


MIN_COMPONENT = 50
"""px: mask components this small are specks, not cells (the BBBC041Seg masks hold many)."""


def cell_diameters(boxes: np.ndarray | None, mask: np.ndarray | None,
                   size: tuple[int, int]) -> np.ndarray:
    """(M,) px: the diameters of an image's whole cells (none cut by its border): from
    its YOLO boxes where it has them, else the equivalent diameters of its mask's
    components (touching cells merge there, so a mask overstates them a little).

    Args:
        boxes: (N, 5) YOLO rows, or None.
        mask: (H, W) bool, needed where there are no boxes.
        size: (H, W) of the image.
    """
    from scipy import ndimage

    from bloomseg.data.boxes import box_diameters, touches_border

    height, width = size
    if boxes is not None:
        return box_diameters(boxes, height, width)
    if mask is None:
        return np.zeros(0)
    labels, count = ndimage.label(mask)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = [i for i, box in enumerate(ndimage.find_objects(labels))
            if areas[i] >= MIN_COMPONENT and not touches_border(
                box[1].start, box[0].start, box[1].stop, box[0].stop, height, width)]
    return 2 * np.sqrt(areas[keep] / np.pi)


def median_diameter(samples: list[Sample], max_pixels: int | None = MAX_PIXELS) -> float | None:
    """The median diameter of the whole cells of some samples, pooled, rounded to 0.1 px
    (None: no whole cell). Boxes need only the image's header; masks are read.

    Raises:
        DataError, ImageError: a file cannot be read (named).
    """
    from bloomseg.data.boxes import labels_to_yolo, read_boxes
    from bloomseg.data.images import header_shape

    found = []
    for s in samples:
        if s.boxes is not None:
            found.append(cell_diameters(read_boxes(s.boxes), None, header_shape(s.image)))
        elif s.mask is not None:
            mask = read_mask(s.mask, max_pixels)
            found.append(cell_diameters(None, mask, mask.shape))
        elif s.labels is not None:
            found.append(cell_diameters(labels_to_yolo(read_labels(s.labels)), None,
                                        header_shape(s.image)))
    return pooled_median(found)


def pooled_median(diameters: list[np.ndarray]) -> float | None:
    """The median of several images' cell diameters pooled, rounded to 0.1 px (None: no
    cell at all)."""
    pooled = np.concatenate(diameters) if diameters else np.zeros(0)
    return round(float(np.median(pooled)), 1) if pooled.size else None


def make_splits(stems: list[str], seed: int = 0, val_fraction: float = 0.2) -> dict:
    """A seeded train/val split of image stems (at least one of each when possible)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction {val_fraction} must be in [0, 1)")
    shuffled = sorted(stems)
    random.Random(seed).shuffle(shuffled)
    n_val = min(max(1, round(len(shuffled) * val_fraction)), len(shuffled) - 1) if val_fraction else 0
    return {"seed": seed, "val_fraction": val_fraction,
            "train": sorted(shuffled[n_val:]), "val": sorted(shuffled[:n_val])}


def _read_splits(path: Path, stems: list[str]) -> dict:
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
        listed = list(splits["train"]) + list(splits["val"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a valid splits file ({e}); delete it to re-split") from None
    unknown = sorted(set(listed) - set(stems))
    new = sorted(set(stems) - set(listed))
    if unknown or new:
        detail = "; ".join(p for p in (
            f"lists images that are gone: {', '.join(unknown[:5])}" if unknown else "",
            f"does not list new images: {', '.join(new[:5])}" if new else "") if p)
        raise DataError(f"{path}: {detail}; delete it to re-split")
    return splits


def has_split(root: str | Path, split: str) -> bool:
    """Whether ``root`` holds a ``split`` folder of images (``split/original``)."""
    return (Path(root) / split / "original").is_dir()


def load_or_make_splits(data_root: str | Path, stems: list[str], fallback: str | Path | None = None,
                        seed: int = 0, val_fraction: float = 0.2) -> tuple[dict, Path | None]:
    """Reuse ``splits.json`` from the data folder or the ``fallback`` file, or write a
    new one.

    A new split goes next to the data (so every run on it shares it) or, where that folder
    is read-only, to ``fallback`` (a file in the run folder).

    Returns:
        (the split ``{"train": [...], "val": [...], "seed", "val_fraction"}``, the file it
        was read from or written to, or None if it could be written nowhere).
    """
    places = [Path(data_root) / SPLITS_FILE]
    if fallback is not None:
        places.append(Path(fallback))
    for path in places:
        if path.is_file():
            return _read_splits(path, stems), path
    splits = make_splits(stems, seed, val_fraction)
    for path in places:
        try:
            save_json(path, splits)
            return splits, path
        except OutputError:
            continue  # read-only data folder: fall back to the run folder
    return splits, None
