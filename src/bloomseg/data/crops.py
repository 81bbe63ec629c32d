"""Datasets of single-cell crops: each crop one cell on black, named by its folder
(``ROOT/<split>/<class>/<file>.png``), such as ``mpidb_pf``. A ``manifest.csv`` at the
root, where there is one, overrides the folder's class (``stage_reviewed``) and gives
each crop's session (the field's acquisition) and the cell's equivalent diameter.

A crop holds no smear: its black border would teach a classifier "black border = this
class". :func:`on_background` puts the cell on smear background, with its own mask, so
that it can be shown as a cell of a field is.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bloomseg.data.vocabulary import CLASSES
from bloomseg.errors import DataError

BACKGROUND = (230, 230, 227)
"""RGB of plain smear background: the median of BBBC041's background pixels (a light,
slightly warm grey); training draws others around it."""


@dataclass(frozen=True)
class Crop:
    """One cell crop.

    Attributes:
        path: the crop (RGB, the cell on black).
        label: its class (one of :data:`~bloomseg.data.vocabulary.CLASSES`).
        session: the acquisition it came from (crops of one session share a microscope
            and a field size).
        diameter: px, the cell diameter of its field: the median equivalent diameter of
            its session's crops (most of them rings, which do not enlarge their cell).
    """

    path: Path
    label: str
    session: str
    diameter: float


def is_crops(root: str | Path) -> bool:
    """Whether a root holds single-cell crops by class folder (no ``classes.txt``)."""
    root = Path(root)
    return not (root / "classes.txt").is_file() and any(
        (root / split).is_dir() and any(p.is_dir() and p.name in CLASSES
                                        for p in (root / split).iterdir())
        for split in ("train", "val", "test"))


def read_crops(root: str | Path, split: str) -> list[Crop]:
    """The crops of one split, in file order.

    Raises:
        DataError: a class folder that is not a class of the vocabulary, or a split
            without crops.
    """
    root = Path(root)
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{folder}: no such split of crops")
    manifest = {}
    if (root / "manifest.csv").is_file():
        with open(root / "manifest.csv", encoding="utf-8") as f:
            manifest = {r["file"]: r for r in csv.DictReader(f)}
    found = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if class_dir.name not in CLASSES:
            raise DataError(f"{class_dir}: a crop folder must be named by a class "
                            f"({', '.join(CLASSES)})")
        for path in sorted(class_dir.glob("*.png")):
            row = manifest.get(path.relative_to(root).as_posix(), {})
            label = row.get("stage_reviewed") or class_dir.name
            found.append((path, label, row.get("session_id") or path.stem.split("-")[0],
                          float(row["equiv_diameter_px"]) if row.get("equiv_diameter_px")
                          else None))
    if not found:
        raise DataError(f"{folder}: no crops (<class>/<file>.png)")
    diameters: dict[str, list[float]] = {}
    for _, _, session, d in found:
        if d is not None:
            diameters.setdefault(session, []).append(d)
    crops = []
    for path, label, session, _ in found:
        own = diameters.get(session)
        crops.append(Crop(path, label, session, float(np.median(own)) if own else float("nan")))
    return crops


def on_background(crop: np.ndarray, colour: tuple[float, float, float] = BACKGROUND,
                  margin: float = 1.0, rng: np.random.Generator | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A crop's cell on plain smear background.

    Args:
        crop: (h, w, 3) uint8, the cell on black (black pixels are not the cell).
        colour: the background's RGB.
        margin: background around the crop on each side, as a share of its longer side.
        rng: adds the grain of a camera (noise of sd 2) where given.

    Returns:
        ((H, W, 3) uint8 image, (H, W) int32 labels: the cell 1, background 0).

    Raises:
        DataError: the crop holds no cell (all black).
    """
    from scipy import ndimage

    cell = crop.max(axis=2) > 0
    if not cell.any():
        raise DataError("a crop holds no cell: every pixel is black")
    # the cell is its largest part; holes in it (a pale centre as pure black) are cell
    parts, count = ndimage.label(cell)
    if count > 1:
        cell = parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1
    cell = ndimage.binary_fill_holes(cell)
    pad = int(round(margin * max(crop.shape[:2])))
    h, w = crop.shape[:2]
    image = np.empty((h + 2 * pad, w + 2 * pad, 3), np.float32)
    image[:] = colour
    if rng is not None:
        image += rng.normal(0, 2, image.shape)
    inner = image[pad:pad + h, pad:pad + w]
    inner[cell] = crop[cell]
    labels = np.zeros(image.shape[:2], np.int32)
    labels[pad:pad + h, pad:pad + w][cell] = 1
    return np.clip(image, 0, 255).round().astype(np.uint8), labels
