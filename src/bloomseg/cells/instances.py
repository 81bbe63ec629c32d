"""One label per cell: a seeded watershed of the predicted foreground.

``centres``: seeds are the peaks of the learned centre map, and the watershed floods
the centre map itself (with a little of the distance transform to break its flat
ties), so two cells part where their centre Gaussians meet, even where they overlap and
the blob has no waist. ``distance`` (models trained without a centre map): seeds are
the peaks of the foreground's distance transform, which is also the surface flooded,
so cells part where the blob narrows. Foreground blobs that hold no seed still become
one cell each; cells smaller than ``min_area`` are dropped.

Pieces cut by the image's own edge and smaller than ``edge_min_area`` are taken out of
the mask as well. Whether that is right is an annotation convention: BBBC041's masks leave
such slivers out (on its 15 validation smears, edge pieces under about 3500 px were
unmasked, larger ones masked), txlpbc boxes every cell a crop cuts. The value is tuned on
every validation dataset by its own score (:func:`tune_edges`).

Flooding the distance transform from centre seeds was measured worse: it lets the
seed nearest the blob's widest point take most of an overlapping pair (F1 0.920 vs
0.975 from exact box centres on the real test smears).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace

import numpy as np

from bloomseg.errors import ConfigError
from bloomseg.settings import Range, check_ranges, setting

METHODS = ("centres", "distance")


@dataclass(frozen=True)
class InstanceParams:
    """How cells are separated.

    Attributes:
        method: ``centres`` (peaks of the centre map) or ``distance`` (peaks of the
            foreground's distance transform).
        min_distance: smallest distance between two seeds, px.
        min_height: smallest seed value: centre probability (``centres``) or distance
            to the background in px (``distance``).
        min_area: smallest cell, px.
        edge_min_area: pieces touching the image's edge with fewer px are background
            (0 keeps them all).
    """

    method: str = "distance"
    min_distance: int = setting(15, Range(int, 1))
    min_height: float = setting(5.0, Range(float, 0))
    min_area: int = setting(50, Range(int, 1))
    edge_min_area: int = setting(0, Range(int, 0))

    def check(self) -> None:
        """Raise ConfigError naming an invalid setting."""
        if self.method not in METHODS:
            raise ConfigError(f"instance method {self.method!r} is not one of {', '.join(METHODS)}")
        check_ranges(self)

    @classmethod
    def from_dict(cls, values: dict) -> InstanceParams:
        """Settings as stored in a checkpoint (unknown names are refused)."""
        params = cls(**values)
        params.check()
        return params

    def as_dict(self) -> dict:
        return asdict(self)

    def scaled(self, factor: float) -> InstanceParams:
        """The same settings for cells ``factor`` times as wide: lengths (seed spacing, and
        the distance method's seed height) times ``factor``, areas times its square. A
        model's settings are tuned at its cell diameter; an image's cells may be larger
        or smaller."""
        if factor == 1:
            return self
        height = self.min_height * factor if self.method == "distance" else self.min_height
        return replace(self, min_distance=max(1, round(self.min_distance * factor)),
                       min_height=height, min_area=max(1, round(self.min_area * factor ** 2)),
                       edge_min_area=round(self.edge_min_area * factor ** 2))


TIE_SCALE = 64.0
"""px: the distance transform is added to the centre map in these units to break its flat
ties; about the largest cell radius in the real smears (their largest distance to the
background is 53-69 px)."""
DEFAULT_CENTRES = InstanceParams("centres", min_distance=15, min_height=0.3)
DEFAULT_DISTANCE = InstanceParams("distance", min_distance=15, min_height=5.0)
ALL_EDGES = (True, True, True, True)
"""Which sides of an array are the image's own edges (top, bottom, left, right): all of
them for a whole image; a block of a large image has fewer."""


class _Prepared:
    """What does not depend on the seed settings: foreground, its blobs, seed candidates.

    The watershed floods each blob (4-connected, as it floods) on its own: flooding never
    crosses the background, so a blob's cells are the same alone as in the whole image,
    and most blobs hold one seed and need no flooding at all. The distance transform that
    breaks the centre map's ties is made on each flooded blob's box and one pixel around it
    (its nearest background pixel lies there), equal to the whole image's there.
    """

    def __init__(self, foreground: np.ndarray, centres: np.ndarray | None, method: str) -> None:
        from scipy import ndimage

        self.foreground = foreground
        self.method = method
        self.blobs = ndimage.label(foreground)[0]
        self.boxes = ndimage.find_objects(self.blobs)
        if method == "centres":
            if centres is None:
                raise ValueError("the centres method needs a centre map")
            self.surface = np.where(foreground, centres, 0).astype(np.float32)
            self.distance = None
        else:
            self.distance = ndimage.distance_transform_edt(foreground).astype(np.float32)
            # a little smoothing keeps ragged borders from making ridge peaks
            self.surface = ndimage.gaussian_filter(self.distance, 1.0)
        self._peaks: dict[tuple[int, float], np.ndarray] = {}

    def seeds(self, min_distance: int, min_height: float, floor: float) -> np.ndarray:
        """(N, 2) seed rows/cols: local maxima at least ``min_distance`` apart and at
        least ``min_height`` high. Found once per distance at ``floor`` and filtered,
        which gives the same seeds (higher peaks are kept first)."""
        from skimage.feature import peak_local_max

        key = (min_distance, floor)
        if key not in self._peaks:
            self._peaks[key] = peak_local_max(self.surface, min_distance=min_distance,
                                              threshold_abs=floor, exclude_border=False)
        peaks = self._peaks[key]
        return peaks[self.surface[peaks[:, 0], peaks[:, 1]] >= min_height]

    def elevation(self, box: tuple[slice, slice]) -> np.ndarray:
        """The surface flooded, on ``box``: the centre map with a little of the distance
        transform to break its flat ties (``centres``), or the distance transform."""
        from scipy import ndimage

        if self.method != "centres":
            return -self.distance[box]
        h, w = self.foreground.shape
        top, left = max(box[0].start - 1, 0), max(box[1].start - 1, 0)
        around = (slice(top, min(box[0].stop + 1, h)), slice(left, min(box[1].stop + 1, w)))
        distance = ndimage.distance_transform_edt(self.foreground[around]).astype(np.float32)
        inner = (slice(box[0].start - top, box[0].stop - top),
                 slice(box[1].start - left, box[1].stop - left))
        # a fixed scale, not the image's largest distance: labels must depend only on
        # the neighbourhood, so that an image cut into blocks gives the same cells
        return -(self.surface[box] + 0.2 * distance[inner] / TIE_SCALE)

    def pieces(self, params: InstanceParams, floor: float | None = None) -> np.ndarray:
        """Every piece of the foreground (watershed cells, then seedless blobs), before
        any is dropped for its size."""
        from scipy import ndimage
        from skimage.segmentation import watershed

        seeds = self.seeds(params.min_distance, params.min_height,
                           params.min_height if floor is None else floor)
        blob_of = self.blobs[seeds[:, 0], seeds[:, 1]]
        per_blob = np.bincount(blob_of, minlength=len(self.boxes) + 1)
        # a blob with one seed is that seed's cell whole
        lookup = np.zeros(len(self.boxes) + 1, np.int32)
        alone = per_blob[blob_of] == 1
        lookup[blob_of[alone]] = np.flatnonzero(alone) + 1
        labels = lookup[self.blobs]
        for blob in np.flatnonzero(per_blob[1:] > 1) + 1:
            box = self.boxes[blob - 1]
            inside = self.blobs[box] == blob
            markers = np.zeros(inside.shape, np.int32)
            mine = np.flatnonzero(blob_of == blob)
            markers[seeds[mine, 0] - box[0].start, seeds[mine, 1] - box[1].start] = mine + 1
            flooded = watershed(self.elevation(box), markers, mask=inside)
            labels[box][inside] = flooded[inside]
        # blobs without a seed are one cell each
        rest, _ = ndimage.label(self.foreground & (labels == 0))
        return np.where(rest > 0, rest + len(seeds), labels).astype(np.int32)


def drop_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Labels with the cells under ``min_area`` px removed, renumbered 1..N in order."""
    areas = np.bincount(labels.ravel())
    kept = areas >= min_area
    kept[0] = False
    # one look-up for both: the dropped cells to 0, the rest to 1..N in order
    lookup = np.where(kept, np.cumsum(kept), 0).astype(np.int32)
    return lookup[labels]


def edge_pieces(pieces: np.ndarray, min_area: int,
                edges: tuple[bool, bool, bool, bool] = ALL_EDGES) -> np.ndarray:
    """(H, W) bool: the labelled pieces touching the given edges with fewer than
    ``min_area`` px (none for ``min_area`` 0)."""
    if min_area <= 0:
        return np.zeros(pieces.shape, bool)
    sides = (pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1])
    touching = np.unique(np.concatenate([s for s, e in zip(sides, edges) if e] or [[0]]))
    areas = np.bincount(pieces.ravel())
    small = np.zeros(len(areas), bool)
    small[touching[(touching > 0) & (areas[touching] < min_area)]] = True
    return small[pieces]


def separate(foreground: np.ndarray, centres: np.ndarray | None = None,
             params: InstanceParams = DEFAULT_DISTANCE,
             edges: tuple[bool, bool, bool, bool] = ALL_EDGES) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels of a predicted foreground, and the foreground without edge slivers.

    Args:
        foreground: (H, W) bool cell mask.
        centres: (H, W) centre probability (needed for the ``centres`` method).
        params: the seed and size settings.
        edges: which sides of the array are the image's own edges (top, bottom, left,
            right), where pieces under ``params.edge_min_area`` are dropped.

    Returns:
        (labels, mask): (H, W) int32 0 background, 1..N cells numbered in raster order of
        their seeds; (H, W) bool ``foreground`` less the dropped edge pieces.
    """
    params.check()
    foreground = np.asarray(foreground, bool)
    pieces = _Prepared(foreground, centres, params.method).pieces(params)
    cut = edge_pieces(pieces, params.edge_min_area, edges)
    return drop_small(np.where(cut, 0, pieces), params.min_area), foreground & ~cut


def label_cells(foreground: np.ndarray, centres: np.ndarray | None = None,
                params: InstanceParams = DEFAULT_DISTANCE) -> np.ndarray:
    """The labels of :func:`separate` for a whole image: (H, W) int32, 0 background."""
    return separate(foreground, centres, params)[0]


GRIDS = {
    "centres": {"min_distance": (7, 11, 17, 25, 35), "min_height": (0.1, 0.2, 0.3, 0.45, 0.6),
                "min_area": (50, 500, 1500, 3000)},
    "distance": {"min_distance": (7, 11, 17, 25, 35), "min_height": (2.0, 5.0, 10.0, 15.0),
                 "min_area": (50, 500, 1500, 3000)},
}
"""Seed settings tried by :func:`tune`, for cells of :data:`GRID_DIAMETER` px (red cells
of about 5000-15000 px), so the larger ``min_area`` values drop debris and platelets that
the mask calls cell. The largest stays well under the smallest cell: 4500 px won on the 15
validation smears but dropped overlapped cells on the test smears (F1 0.945 -> 0.915).
A model of another cell size tries them scaled (:func:`grid_for`)."""
GRID_DIAMETER = 108.5
"""px: the cell diameter :data:`GRIDS` and :data:`EDGE_GRID` were made for."""


def _grid_factor(cell_diameter: float | None) -> float:
    """How much wider a model's cells are than those the grids were made for."""
    return 1.0 if cell_diameter is None else cell_diameter / GRID_DIAMETER


def grid_for(method: str, cell_diameter: float | None) -> dict:
    """:data:`GRIDS`' settings of ``method`` for a model of ``cell_diameter`` px (None:
    as they are): lengths scaled with the diameter, areas with its square (the centre
    map's heights are probabilities and stay)."""
    f = _grid_factor(cell_diameter)
    grid = dict(GRIDS[method])
    grid["min_distance"] = tuple(max(1, round(v * f)) for v in grid["min_distance"])
    grid["min_area"] = tuple(max(1, round(v * f * f)) for v in grid["min_area"])
    if method == "distance":  # a distance-transform height is a length
        grid["min_height"] = tuple(round(v * f, 2) for v in grid["min_height"])
    return grid


def tune(cases: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]], method: str,
         grid: dict | None = None, groups: list[str] | None = None,
         cell_diameter: float | None = None) -> tuple[InstanceParams, list[dict]]:
    """Choose separation settings by instance F1 against boxes (mean over images, or the
    mean of each group's mean; ties go to the smaller mean relative count error).

    Args:
        cases: per image (foreground (H, W) bool, centre map or None, boxes (N, 4) as
            x0, y0, x1, y1 pixels).
        method: ``centres`` or ``distance``.
        grid: values to try for ``min_distance``, ``min_height`` and ``min_area``
            (default :data:`GRIDS` at ``cell_diameter``, :func:`grid_for`).
        groups: per image, the dataset it belongs to: each dataset then weighs the same,
            however many images it has.
        cell_diameter: px, the model's cell diameter (None: the grid as it is).

    Returns:
        (the best settings, one row per setting tried with its mean F1 and count error).
    """
    from bloomseg.cells.matching import match_boxes

    grid = grid or grid_for(method, cell_diameter)
    groups = groups or [""] * len(cases)
    weights = np.array([1 / groups.count(g) for g in groups]) / len(set(groups))
    floor, smallest = min(grid["min_height"]), min(grid["min_area"])
    prepared = [(_Prepared(fg, c, method), boxes) for fg, c, boxes in cases]
    rows = []
    for d, h in itertools.product(grid["min_distance"], grid["min_height"]):
        # the watershed does not depend on min_area: label once, then drop small cells
        labelled = [(drop_small(p.pieces(InstanceParams(method, d, h), floor), smallest), boxes)
                    for p, boxes in prepared]
        for a in grid["min_area"]:
            params = InstanceParams(method, d, h, a)
            scores = [match_boxes(drop_small(labels, a), boxes) for labels, boxes in labelled]
            rows.append({**params.as_dict(), "f1": float(weights @ [s.f1 for s in scores]),
                         "count_error": float(weights @ [s.relative_count_error
                                                         for s in scores])})
    best = max(rows, key=lambda r: (r["f1"], -r["count_error"]))
    return InstanceParams(method, best["min_distance"], best["min_height"], best["min_area"]), rows


EDGE_GRID = tuple(range(0, 6001, 500))
"""``edge_min_area`` values tried by :func:`tune_edges`, px: up to about one whole red cell
(5000-15000 px) at :data:`GRID_DIAMETER` (a model of another size tries them times the
square of the sizes' ratio, :func:`edge_grid_for`)."""


def edge_grid_for(cell_diameter: float | None) -> tuple[int, ...]:
    """:data:`EDGE_GRID` for a model of ``cell_diameter`` px (None: as it is)."""
    return tuple(round(v * _grid_factor(cell_diameter) ** 2) for v in EDGE_GRID)


def tune_edges(cases: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None,
                                  np.ndarray | None]],
               params: InstanceParams, grid: tuple[int, ...] = EDGE_GRID,
               groups: list[str] | None = None) -> tuple[InstanceParams, list[dict]]:
    """Choose ``edge_min_area`` by each dataset's own score, every dataset weighing the
    same (ties go to the smaller value, so 0 wins unless dropping slivers helps).

    Datasets follow different conventions at the image's edge (BBBC041's masks leave
    slivers of cells out, txlpbc boxes every cell a crop cuts), so each is judged as its
    annotators drew it: by the Dice of its masks pooled over its images where it has
    masks, else by the mean cell F1 against its boxes. The score is the mean over the
    datasets, as the validation score that picks the epoch.

    Args:
        cases: per image (predicted foreground (H, W) bool, centre map or None, true
            mask (H, W) bool or None, true boxes (N, 4) x0, y0, x1, y1 or None).
        params: the separation settings, whose ``edge_min_area`` is replaced.
        grid: values to try.
        groups: per image, its dataset (default: all one dataset).

    Returns:
        (the settings with the best value, one row per value: ``score`` and each
        dataset's ``<name>_dice`` or ``<name>_f1``).
    """
    from bloomseg.cells.matching import match_boxes

    groups = groups or [""] * len(cases)
    masked = {g for g, (_, _, mask, _) in zip(groups, cases) if mask is not None}
    columns = {g: f"{g or 'val'}_{'dice' if g in masked else 'f1'}" for g in dict.fromkeys(groups)}
    totals = {g: np.zeros((len(grid), 2)) for g in masked}  # overlap, predicted + true
    f1s = {g: [] for g in columns if g not in masked}  # per image: F1 per value
    for g, (foreground, centres, truth, boxes) in zip(groups, cases):
        if g in masked and truth is None or g not in masked and boxes is None:
            continue
        foreground = np.asarray(foreground, bool)
        pieces = _Prepared(foreground, centres, params.method).pieces(params)
        scores = []
        for i, area in enumerate(grid):
            cut = edge_pieces(pieces, area)
            if g in masked:
                kept = foreground & ~cut
                totals[g][i] += (kept & truth).sum(), kept.sum() + truth.sum()
            else:
                scores.append(match_boxes(drop_small(np.where(cut, 0, pieces), params.min_area),
                                          boxes).f1)
        if g not in masked:
            f1s[g].append(scores)
    per_group = {g: 2 * t[:, 0] / np.maximum(t[:, 1], 1) for g, t in totals.items()}
    per_group |= {g: np.mean(v, axis=0) for g, v in f1s.items() if v}
    score = np.mean(list(per_group.values()), axis=0)
    rows = [{"edge_min_area": a, "score": float(score[i]),
             **{columns[g]: float(v[i]) for g, v in per_group.items()}}
            for i, a in enumerate(grid)]
    best = grid[int(np.argmax(score))]  # argmax takes the first of equal values
    return replace(params, edge_min_area=best), rows


def touching_pairs(labels: np.ndarray) -> np.ndarray:
    """(2, K) the labels of every pair of 4-connected neighbouring pixels of two cells (a
    pair of cells once per pixel pair they share: its count is the length of their border)."""
    pairs = [np.stack([a[touch], b[touch]]) for a, b in
             ((labels[:-1], labels[1:]), (labels[:, :-1], labels[:, 1:]))
             for touch in [(a != b) & (a > 0) & (b > 0)]]
    return np.concatenate(pairs, axis=1)


def merge_touching(labels: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    """Join chosen cells that touch each other (4-connected) into one cell each.

    A white cell's lobed nucleus can hold several centre peaks, which cut it into pieces;
    pieces that a classifier calls white are put back together by this.

    Args:
        labels: (H, W) cells 1..N.
        chosen: (N,) bool, the cells that may be joined.

    Returns:
        (labels renumbered 1..M in order of each group's first cell, the old labels of
        each new cell).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    count = int(labels.max(initial=0))
    pairs = touching_pairs(labels)
    keep = chosen[pairs[0] - 1] & chosen[pairs[1] - 1] if pairs.size else np.zeros(0, bool)
    graph = coo_matrix((np.ones(int(keep.sum())), (pairs[0][keep] - 1, pairs[1][keep] - 1)),
                       shape=(count, count))
    _, group = connected_components(graph, directed=False)
    order = {g: i + 1 for i, g in enumerate(dict.fromkeys(group.tolist()))}
    members: list[list[int]] = [[] for _ in order]
    for old, g in enumerate(group.tolist(), start=1):
        members[order[g] - 1].append(old)
    return regroup(labels, members), members


JOIN_MIN_CUT = 0.6
"""Pieces are one white cell only where they were cut apart, not where they touch: each
piece's border with the rest of its group must be at least this share of the narrower
side's width (the diameter of a disk of its area). Two halves of a disk share 1.4 of a
half's width, two disks side by side next to nothing. On the txlpbc val smears the 12
joins of pieces of one white cell shared 1.1 to 2.6, the one of two white cells 0.36;
0.6 lies between, nearer the latter (about their geometric mean)."""
JOIN_MIN_SOLIDITY = 0.8
"""...the joined shape this convex (area over its convex hull's): a white cell with a
platelet or a red cell beside it leaves a waist (txlpbc val: it refuses a white cell and
platelet joined, 0.77, and one single white cell, 0.76)."""
JOIN_MIN_AREA = 1.0
"""...and at least this many red cells' area at the image's cell diameter (white cells are
larger than red cells: a small joined shape is more likely red cells called white)."""


def fits_one_cell(pieces: np.ndarray, groups: list[list[int]], diameter: float) -> np.ndarray:
    """Whether each group of touching pieces has the shape of one cell cut apart.

    Args:
        pieces: (H, W) cells 1..N; groups: cells of ``pieces`` to be joined, each group
            one joined cell.
        diameter: px, a red cell's diameter in this image.

    Returns:
        (len(groups),) bool: cut apart (:data:`JOIN_MIN_CUT`), convex
        (:data:`JOIN_MIN_SOLIDITY`) and large (:data:`JOIN_MIN_AREA`).
    """
    from skimage.measure import regionprops

    areas = np.bincount(pieces.ravel(), minlength=int(pieces.max(initial=0)) + 1)
    group_of = np.zeros(len(areas), int)  # 0: in no group
    for k, group in enumerate(groups, start=1):
        group_of[group] = k
    a, b = touching_pairs(pieces)
    inside = (group_of[a] > 0) & (group_of[a] == group_of[b])
    # each piece's border with the rest of its group, in pixel pairs
    shared = np.bincount(np.concatenate([a[inside], b[inside]]), minlength=len(areas))
    props = regionprops(regroup(pieces, groups))  # the groups alone, 1..K
    red_area = np.pi / 4 * diameter ** 2
    fits = []
    for k, group in enumerate(groups):
        total = int(areas[group].sum())
        cut = all(shared[c] >= JOIN_MIN_CUT * np.sqrt(4 * min(areas[c], total - areas[c]) / np.pi)
                  for c in group)
        fits.append(cut and props[k].solidity >= JOIN_MIN_SOLIDITY
                    and props[k].area >= JOIN_MIN_AREA * red_area)
    return np.array(fits, bool)


def regroup(labels: np.ndarray, members: list[list[int]]) -> np.ndarray:
    """(H, W) labels whose cell k+1 is the union of the old cells ``members[k]`` (each old
    cell in one group at most; cells in none, and the background, become 0)."""
    lookup = np.zeros(int(labels.max(initial=0)) + 1, np.int32)
    for new, group in enumerate(members, start=1):
        lookup[group] = new
    return lookup[labels]
