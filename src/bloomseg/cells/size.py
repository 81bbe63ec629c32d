"""The automatic estimate of an image's cell diameter, made before any model sees it.

Why classical and not the model's first pass: a model trained at one cell size does not
see cells far from it (at 0.4x, the default model's cell F1 is 0.004), so a first
pass at the model's scale fails exactly on the images that need the estimate. The
estimate here does not depend on a model or on the scale:

1. foreground: optical density against the image's own white (its 99th percentile per
   channel, so a tinted background counts as white), median filtered; the lower of two
   multi-Otsu thresholds (so a dark white-cell nucleus does not pull the threshold into
   the red cells; of three, where the cells it leaves cover under :data:`SPARSE` of the
   field) separates cells from background, and the edge is drawn at
   :data:`EDGE_LEVEL` of the way from the background to it; holes filled (a red cell's
   pale centre);
2. cells: a watershed of the distance transform from its maxima deeper than a fraction
   of the typical maximum (touching cells come apart, a rough outline does not split);
3. each cell's diameter is the mean of its box's sides (as the boxes that a model's
   ``cell_diameter`` is measured from); a cell cut by one side of the image gives its
   longer side (the chord along a cut is the diameter when the centre is inside), a cell
   cut by more sides nothing;
4. the median over the cells, times :data:`CALIBRATION`.

It works on an overview of at most :data:`WORK` px a side; where the cells there are
under :data:`SMALL` px, it looks again at a central crop at the resolution that makes
them about :data:`LOOK` px, so small cells in a large image are measured in full detail
while the cost stays that of a 512 px image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WORK = 512
"""px: the longest side of the picture the estimate is made on."""
SMALL = 24
"""px: cells smaller than this in the overview are measured again, closer."""
LOOK = 40
"""px: the cell size that closer look aims at."""
CALIBRATION = 1.06
"""Box diameter per measured diameter: the median of the three train splits' medians
(``bbbc041seg`` 1.046, ``txlpbc`` Raabin 1.069 and PBC 1.060, whole boxes as
:func:`bloomseg.data.boxes.box_diameters` takes them; ``python benchmarks/cell_size.py
--fit``)."""
MIN_CONTRAST = 0.1
"""The least optical density (summed over channels) between the darkest pixels and the
white for an image to count as having cells at all."""
PEAK_DEPTH = 0.3
"""How much deeper than its surroundings (a fraction of the typical cell's radius) a
distance-transform maximum must be to start a cell of its own."""
SPARSE = 0.2
"""Foreground fraction under which the lower of three classes' thresholds is taken to
have cut the red cells away, and four classes are used (on ``txlpbc`` train, cells
estimated under 0.7x their size went from 31 to 22 of 700 crops, the other splits
unchanged; ``python benchmarks/cell_size.py``)."""
EDGE_LEVEL = 0.6
"""Where between the background's density (0) and the cell threshold (1) a cell's edge
is drawn."""
FEW = 5
"""An estimate from fewer cells than this is flagged in its note."""


@dataclass(frozen=True)
class SizeEstimate:
    """An image's estimated cell diameter.

    Attributes:
        diameter: px, in the image's own pixels (None: no cells found).
        cells: how many cells it is the median of.
    """

    diameter: float | None
    cells: int

    @property
    def note(self) -> str:
        """What a person reading the result should know about it ('' when nothing)."""
        if self.diameter is None:
            return "no cells found to estimate the cell diameter from"
        if self.cells < FEW:
            return f"cell diameter estimated from only {self.cells} cell{'s' * (self.cells > 1)}"
        return ""


def labelled_diameter(labels: np.ndarray) -> SizeEstimate:
    """The cell diameter of a label image's cells, as a model's ``cell_diameter`` is
    measured: the median over the cells not cut by its border of the mean of their box's
    sides.

    Args:
        labels: (H, W) cells 1..N, 0 background.

    Returns:
        The median (None where no cell is whole) and how many whole cells it is of.
    """
    from scipy import ndimage

    from bloomseg.data.boxes import touches_border

    h, w = labels.shape
    sides = [(box[0].stop - box[0].start + box[1].stop - box[1].start) / 2
             for box in ndimage.find_objects(labels) if box is not None
             and not touches_border(box[1].start, box[0].start, box[1].stop, box[0].stop, h, w)]
    if not sides:
        return SizeEstimate(None, 0)
    return SizeEstimate(round(float(np.median(sides)), 1), len(sides))


def estimate_diameter(image: np.ndarray) -> SizeEstimate:
    """Estimate the median cell diameter of a bright-field smear.

    Args:
        image: (H, W, 3) uint8 RGB.

    Returns:
        The estimate, in the image's pixels; ``diameter`` None where no cell is found
        (a blank or flat field).
    """
    h, w = image.shape[:2]
    scale = min(1.0, WORK / max(h, w))
    sizes = _cell_sizes(_shrunk(image, scale))
    if len(sizes) and np.median(sizes) < SMALL and scale < 1:
        closer = min(1.0, scale * LOOK / float(np.median(sizes)))
        side = int(WORK / closer)
        top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
        again = _cell_sizes(_shrunk(image[top:top + side, left:left + side], closer))
        if len(again):
            sizes, scale = again, closer
    if not len(sizes):
        return SizeEstimate(None, 0)
    return SizeEstimate(round(float(np.median(sizes)) * CALIBRATION / scale, 1), len(sizes))


def _shrunk(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` scaled by ``scale`` (<= 1): first every n-th pixel, keeping a factor of
    at least 1/2 for the smoothing resample, so a large image is never copied whole."""
    from bloomseg.data.resampling import resample

    if scale >= 1:
        return image
    step = max(1, int(0.5 / scale))
    return resample(image[::step, ::step], scale * step)


def _cell_sizes(image: np.ndarray) -> np.ndarray:
    """(N,) px: the diameters of the cells of an (H, W, 3) uint8 image (none where it
    has too little contrast to hold any)."""
    from scipy import ndimage
    from skimage.filters import threshold_multiotsu
    from skimage.segmentation import watershed

    rgb = image.astype(np.float32) + 1
    white = np.percentile(rgb.reshape(-1, 3), 99, axis=0)
    # a median filter quiets the noise without moving the edges as a blur would
    density = ndimage.median_filter(np.log(white / np.minimum(rgb, white)).sum(-1), 3)
    if np.percentile(density, 99) < MIN_CONTRAST:
        return np.zeros(0)
    levels = np.unique(density)
    if len(levels) < 2:
        return np.zeros(0)
    # two levels (a drawn or thresholded picture): between them
    threshold = threshold_multiotsu(density, 3)[0] if len(levels) > 2 else levels.mean()
    if len(levels) > 3 and (density > threshold).mean() < SPARSE:
        # a granulocyte's nucleus and granules took both thresholds and left the red
        # cells below them: the lowest of four classes parts them from the background
        threshold = threshold_multiotsu(density, 4)[0]
    # the outline is drawn nearer the background than Otsu's threshold, where a person
    # drawing a box sees the cell end (a cell's edge is soft)
    background = float(np.median(density[density <= threshold]))
    edge = background + EDGE_LEVEL * (threshold - background)
    foreground = ndimage.binary_fill_holes(ndimage.binary_opening(density > edge))
    distance = ndimage.distance_transform_edt(foreground)
    # a first look at the depths of all maxima gives the typical cell's radius, and so
    # how deep a maximum must be to be a cell's and not a bump on an outline
    radii = _maxima_depths(distance, 1.0)
    if not len(radii):
        return np.zeros(0)
    seeds, count = ndimage.label(h_maxima(distance, max(1.0, PEAK_DEPTH * float(np.median(radii))))
                                 & (distance >= 2))
    cells = watershed(-distance, seeds, mask=foreground)
    height, width = foreground.shape
    sizes = []
    for box in ndimage.find_objects(cells):
        if box is None:
            continue
        rows, cols = box
        cut = ((rows.start == 0) + (rows.stop == height) + (cols.start == 0)
               + (cols.stop == width))
        extent = (rows.stop - rows.start, cols.stop - cols.start)
        if cut == 0:
            sizes.append(sum(extent) / 2)
        elif cut == 1:
            sizes.append(max(extent))
    return np.array(sizes, float)


def _maxima_depths(distance: np.ndarray, depth: float) -> np.ndarray:
    """The distance-transform values of its regional maxima at least ``depth`` deep."""
    from scipy import ndimage

    seeds, count = ndimage.label(h_maxima(distance, depth) & (distance >= 2))
    if not count:
        return np.zeros(0)
    return np.asarray(ndimage.maximum(distance, seeds, np.arange(1, count + 1)))


EIGHT = np.ones((3, 3), bool)
"""The neighbours a maximum's height is measured over (scikit-image's h-maxima's)."""


def h_maxima(distance: np.ndarray, depth: float) -> np.ndarray:
    """(H, W) bool: scikit-image's ``h_maxima`` of a distance transform, the same pixels
    found 1.5x as fast: each blob of the foreground on its own.

    A maximum is kept where every way from it to a higher pixel dips more than ``depth``
    below it. A maximum at least ``depth`` high cannot leave its blob without dipping to
    the background, so it is judged on its blob alone, and a blob with one maximum
    needs no judging; one lower than ``depth`` is kept only where it is the image's
    highest (the way across the background does not dip far enough).

    Args:
        distance: (H, W) float, 0 on the background.
        depth: > 0, in the distance's units.
    """
    from scipy import ndimage
    from skimage.morphology import h_maxima as whole

    if depth > np.ptp(distance):
        return np.zeros(distance.shape, bool)
    # regional maxima: pixels no neighbour exceeds, joined where they touch
    peaks = (ndimage.maximum_filter(distance, 3) == distance) & (distance > 0)
    blobs, count = ndimage.label(distance > 0, EIGHT)
    plateaus, _ = ndimage.label(peaks, EIGHT)
    per_blob = np.bincount(blobs[peaks][np.unique(plateaus[peaks], return_index=True)[1]],
                           minlength=count + 1)
    found = peaks & (per_blob[blobs] == 1)
    for blob, box in enumerate(ndimage.find_objects(blobs), start=1):
        if per_blob[blob] > 1:
            mine = blobs[box] == blob
            alone = np.pad(np.where(mine, distance[box], 0), 1)
            found[box] |= whole(alone, depth)[1:-1, 1:-1].astype(bool) & mine
    return found & ((distance >= depth) | (distance >= distance.max()))
