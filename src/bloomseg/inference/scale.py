"""Which scale an image is segmented at: the one place that decides it.

The network reads the cells' size (:mod:`bloomseg.model.size`). A reading is taken on
a view of the image at a trial scale and says how far the cells there are from the size
the network works at; the image is then looked at again at the scale that reading asks
for, until the network sees its own size there (:data:`SETTLED`). The classical
estimate (:func:`bloomseg.cells.size.estimate_diameter`) is only the first trial scale,
and the two are compared: where they disagree the result says so. No image is enlarged
or shrunk on a scale at which the network's own reading contradicts it: where the
readings do not settle, the image is segmented at the last reading's scale and the
note says that the size is uncertain.

Models without a size head keep the classical estimate alone, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bloomseg.data.resampling import resample
from bloomseg.inference.options import MAX_AUTO_ZOOM, OWN
from bloomseg.model.config import DIAMETER
from bloomseg.model.inputs import pad_reflect, to_tensor
from bloomseg.model.network import SegmentationModel

VIEW = 448
"""px: the side of the central view (at the trial scale) a size reading is taken on."""
SETTLED = math.log(1.1)
"""A reading within 10% of the network's own size ends the search."""
AGREE = math.log(1.3)
"""The network and the classical estimate agree when they are within 30% of each other;
a final reading past this, at the scale chosen, means the network did not settle."""
STEP = math.log(3.0)
"""The most one reading moves the trial scale (the head was trained on cells from half to
twice its size: further out it only tells the direction)."""
READINGS = 5
"""The most readings one image gets."""
START = 2.0
"""The first trial is the classical estimate within START times the model's own size
either way: a classical estimate far off (granules read as cells, a clump read as one)
would otherwise show the network a view of background, or a view of a few pixels."""


@dataclass(frozen=True)
class Scale:
    """The cell diameter an image is segmented at.

    Attributes:
        diameter: px, the image's cell diameter (None: unknown; the image is segmented
            at the model's own scale, whatever it is).
        source: ``model`` (the model's own scale, no resampling), ``given`` or
            ``estimated``.
        note: what a person should know about it ('' when nothing): why an estimate
            could not be used, that the methods disagree, or that it rests on few cells.
        classical: px, the classical estimate, where one was made (None: not made or no
            cells found).
        readings: the trial diameters (px) the network read the image at, in order.
        settled: the network's last reading was within :data:`AGREE` of its own size
            (None: the network was not asked).
    """

    diameter: float | None
    source: str
    note: str = ""
    classical: float | None = None
    readings: tuple[float, ...] = ()
    settled: bool | None = None


def read_size(model: SegmentationModel, image: np.ndarray, factor: float = 1.0) -> float:
    """The network's reading of an image's cell size at a trial scale.

    Args:
        model: a model with a size head.
        image: (H, W, 3) uint8, normalised as the model expects, at the image's own scale.
        factor: the trial scale: the image is seen resampled by it (the central
            :data:`VIEW` px of it, at that scale).

    Returns:
        log(the cells' diameter at the trial scale / the model's cell diameter): 0 means
        the trial scale is right, log 2 that the cells there are twice the model's size.
    """
    h, w = image.shape[:2]
    side = max(1, round(VIEW / factor))  # the view, in the image's own pixels
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    view = np.asarray(image[top:top + side, left:left + side])
    if factor != 1:
        view = resample(view, factor)
    grid = model.grid
    padded = pad_reflect(view, max(grid, math.ceil(view.shape[0] / grid) * grid),
                         max(grid, math.ceil(view.shape[1] / grid) * grid))
    with torch.no_grad():
        return float(model.forward_sized(to_tensor(padded))[1][0])


def network_scale(model: SegmentationModel, image: np.ndarray, cell_diameter: float,
                  start: float) -> tuple[float, tuple[float, ...], bool]:
    """The cell diameter the network reads an image at, searching from ``start``.

    Args:
        model: a model with a size head, working at ``cell_diameter``.
        image: (H, W, 3) uint8, normalised.
        cell_diameter: px, the model's own cell diameter.
        start: px, the first trial diameter of the image's cells.

    Returns:
        (diameter px, the trial diameters read, whether the last reading settled within
        :data:`AGREE`).
    """
    trial, tried, last = float(start), [], math.inf
    for _ in range(READINGS):
        tried.append(round(trial, 1))
        # never enlarge past MAX_AUTO_ZOOM to look: the reading there would be of noise
        factor = min(cell_diameter / trial, MAX_AUTO_ZOOM)
        last = read_size(model, image, factor)
        # the cells' size at this trial, in the image's pixels
        found = cell_diameter * math.exp(float(np.clip(last, -STEP, STEP))) / factor
        trial = float(np.clip(found, DIAMETER.low, DIAMETER.high))
        if abs(last) < SETTLED:
            break
    return round(trial, 1), tuple(tried), abs(last) < AGREE


def disagreement(network: float, classical: float | None) -> str:
    """The note where the classical estimate and the network's reading disagree ('' when
    they agree or there is no classical estimate)."""
    if classical is None or abs(math.log(network / classical)) < AGREE:
        return ""
    return (f"the size methods disagree: the network reads {network:g} px, the classical "
            f"estimate {classical:g} px (the network's is used)")


def estimated_scale(image: np.ndarray, cell_diameter: float,
                    model: SegmentationModel | None = None,
                    normalised: np.ndarray | None = None) -> Scale:
    """The ``auto`` scale of an image: the network's reading where the model has a size
    head (searching from the classical estimate), else the classical estimate alone.

    Args:
        image: (H, W, 3) uint8 RGB as read.
        cell_diameter: px, the model's own cell diameter.
        model: the segmentation model (its size head is used where it has one).
        normalised: ``image`` normalised as the model expects (needed with a size head).

    Returns:
        The scale, ``estimated`` (or the model's own where nothing could be read), its
        note, the classical estimate and the network's trial diameters.
    """
    from bloomseg.cells.size import estimate_diameter

    classical = estimate_diameter(image)
    smallest = cell_diameter / MAX_AUTO_ZOOM
    if model is None or model.size_head is None:
        if classical.diameter is None:
            return Scale(cell_diameter, OWN, f"{classical.note}: segmented at the model's scale")
        if classical.diameter < smallest:
            return Scale(round(smallest, 1), "estimated",
                         f"cells estimated at {classical.diameter:g} px, under the "
                         f"{smallest:.1f} px an estimate may enlarge to: segmented at "
                         f"{smallest:.1f} px (give --diameter to go lower)", classical.diameter)
        return Scale(min(classical.diameter, DIAMETER.high), "estimated", classical.note,
                     classical.diameter)
    if normalised is None:
        raise ValueError("a size head reads the normalised image: pass it")
    start = classical.diameter if classical.diameter is not None else cell_diameter
    start = float(np.clip(start, cell_diameter / START, cell_diameter * START))
    diameter, tried, settled = network_scale(model, normalised, cell_diameter, start)
    notes = [classical.note] if classical.diameter is None else [
        disagreement(diameter, classical.diameter)]
    if not settled:
        notes.append(f"the network's size reading did not settle (it read {', '.join(map(str, tried))} "
                     f"px in turn): the cell size is uncertain, give --diameter if it is known")
    if diameter < smallest:
        notes.append(f"cells read at {diameter:g} px, under the {smallest:.1f} px an estimate "
                     f"may enlarge to: segmented at {smallest:.1f} px (give --diameter to go "
                     "lower)")
        diameter = round(smallest, 1)
    return Scale(diameter, "estimated", "; ".join(n for n in notes if n), classical.diameter,
                 tried, settled)


def found_size_note(labels: np.ndarray, diameter: float) -> str:
    """The note where the cells found contradict the diameter they were found at ('' when
    they do not, or too few are whole to tell).

    Args:
        labels: (H, W) cells 1..N of a whole image.
        diameter: px, the cell diameter it was segmented at.
    """
    from bloomseg.cells.size import FEW, labelled_diameter

    found = labelled_diameter(labels)
    if found.cells < FEW or abs(math.log(found.diameter / diameter)) < AGREE:
        return ""  # too few whole cells to tell their size, or they agree
    return (f"the whole cells found are {found.diameter:.0f} px across (median of "
            f"{found.cells}), not the {diameter:g} px they were segmented at: check the cell "
            "diameter")
