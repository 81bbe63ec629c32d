"""Cell outputs that other tools open: label TIFFs (Fiji, napari), GeoJSON (QuPath) and
COCO JSON with RLE masks.

Polygon coordinates are pixels with the origin at the image's top-left corner (pixel
(r, c) covers x in [c, c+1), y in [r, r+1)), as QuPath reads them.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np

from bloomseg.cells.types import COLOURS
from bloomseg.files import atomic_output

UINT16_MAX = 65535


def label_dtype(count: int) -> type:
    """uint16 for up to 65535 cells, uint32 above."""
    return np.uint16 if count <= UINT16_MAX else np.uint32


def save_labels(path: str | Path, labels: np.ndarray) -> None:
    """Write a label image as a zlib-compressed TIFF (uint16, or uint32 above 65535
    cells), atomically."""
    import tifffile

    data = labels.astype(label_dtype(int(labels.max(initial=0))), copy=False)
    buffer = io.BytesIO()  # tifffile wants a named file or a seekable buffer
    tifffile.imwrite(buffer, data, compression="zlib")
    with atomic_output(path) as f:
        f.write(buffer.getbuffer())


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def simplified(rings: list[np.ndarray], tolerance: float) -> list[np.ndarray]:
    """Traced outlines with fewer points (Douglas-Peucker): every point left out lies
    within ``tolerance`` px of the chain kept (of the nearer point of each segment, as
    skimage's ``approximate_polygon`` measures it). Every ring's segments are split in
    the same array pass, one pass per level of splitting, instead of a dozen array
    operations per segment (which made the GeoJSON the slowest output).

    Args:
        rings: (N, 2) points each, a closed ring's first and last the same.
        tolerance: px.

    Returns:
        The points kept of each ring, in order, its first and last among them.
    """
    if not rings:
        return []
    # points on a straight run first: each lies on the segment between its neighbours,
    # so what lies within reach of the chain kept still does
    runs = []
    for ring in rings:
        step = np.diff(ring, axis=0)
        turns = np.abs(step[:-1, 0] * step[1:, 1] - step[:-1, 1] * step[1:, 0]) > 1e-9
        runs.append(ring[np.concatenate([[True], turns, [True]])])
    sizes = np.array([len(r) for r in runs])
    points = np.concatenate(runs)
    firsts = np.cumsum(sizes) - sizes
    keep = np.zeros(len(points), bool)
    keep[firsts] = keep[firsts + sizes - 1] = True
    index = np.arange(len(points))
    while not keep.all():
        # each point's segment: the kept points before and after it (rings never share one)
        start = np.maximum.accumulate(np.where(keep, index, 0))
        end = np.minimum.accumulate(np.where(keep, index, len(points))[::-1])[::-1]
        inner = np.flatnonzero(~keep)
        a, b = start[inner], end[inner]
        offset, along = points[inner] - points[a], points[b] - points[a]
        length2 = (along * along).sum(axis=1)
        t = (offset * along).sum(axis=1)
        distance = np.minimum(np.hypot(offset[:, 0], offset[:, 1]),
                              np.hypot(*(offset - along).T))
        beside = (t > 0) & (t < length2)  # across the segment, else to its nearer end
        across = np.abs(offset[beside, 0] * along[beside, 1] - offset[beside, 1] * along[beside, 0])
        distance[beside] = across / np.sqrt(length2[beside])
        # each segment's farthest point (the first of equals), where it is too far
        order = np.lexsort((-distance, a))
        farthest = order[np.concatenate([[True], a[order][1:] != a[order][:-1]])]
        split = farthest[distance[farthest] > tolerance]
        if not len(split):
            break
        keep[inner[split]] = True
    return np.split(points[keep], np.cumsum(np.add.reduceat(keep, firsts))[:-1])


def cell_polygons(labels: np.ndarray, tolerance: float = 0.5) -> dict[int, list[np.ndarray]]:
    """The outline of every cell as polygon rings.

    Args:
        labels: (H, W) integer labels, 0 background.
        tolerance: largest distance (px) a simplified outline may move from the traced one.

    Returns:
        {label: [exterior, hole, ...]}; each ring (N, 2) x, y, closed (last point = first),
        the exterior with a positive shoelace area and holes negative (GeoJSON's
        right-hand rule on the numbers; on screen, with y down, that looks clockwise).
    """
    from scipy import ndimage
    from skimage.measure import find_contours

    traced: list[tuple[int, np.ndarray]] = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        r0, c0 = box[0].start, box[1].start
        crop = np.pad(labels[box] == index, 1).astype(np.float32)
        for contour in find_contours(crop, 0.5):
            # contour points are (row, col) in the padded crop's pixel-centre indices:
            # index i sits at coordinate i - 1 + 0.5 of the image
            traced.append((index, np.stack([contour[:, 1] + c0 - 0.5,
                                            contour[:, 0] + r0 - 0.5], axis=1)))
    rings = [r for _, r in traced]
    if tolerance > 0:
        rings = simplified(rings, tolerance)
    by_cell: dict[int, list[np.ndarray]] = {}
    for (index, _), ring in zip(traced, rings):
        if len(ring) >= 4:
            by_cell.setdefault(index, []).append(ring)
    out: dict[int, list[np.ndarray]] = {}
    for index, cell in by_cell.items():
        cell.sort(key=lambda r: -abs(_ring_area(r)))
        out[index] = [r if (_ring_area(r) > 0) == (i == 0) else r[::-1] for i, r in enumerate(cell)]
    return out


def classification(row: dict, name: str = "Cell") -> dict:
    """A cell's QuPath classification: its class (``infected: <stage>`` for an infected
    cell, a QuPath derived class) in its class's colour, or ``name`` where it has none."""
    kind = row.get("class")
    if not kind:
        return {"name": name, "color": list(COLOURS["red_blood_cell"])}
    shown = f"{kind}: {row['stage']}" if row.get("stage") else kind
    return {"name": shown, "color": list(COLOURS[kind])}


def geojson_features(labels: np.ndarray, rows: list[dict], name: str = "Cell") -> dict:
    """A FeatureCollection of one Polygon per cell that QuPath imports as detections.

    Args:
        labels: (H, W) cell labels.
        rows: per-cell measurements (:func:`bloomseg.cells.measure.measure_cells`), keyed by ``id``.
        name: the classification QuPath shows.
    """
    return polygons_geojson(cell_polygons(labels), rows, name)


def polygons_geojson(polygons: dict[int, list[np.ndarray]], rows: list[dict],
                     name: str = "Cell") -> dict:
    """:func:`geojson_features` of outlines already traced (:func:`cell_polygons`)."""
    by_id = {row["id"]: row for row in rows}
    features = []
    for index, rings in sorted(polygons.items()):
        row = by_id.get(index, {"id": index})
        measurements = {k: float(v) for k, v in row.items()
                        if k != "id" and isinstance(v, (int, float, bool, np.number))}
        features.append({
            "type": "Feature",
            "id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"bloomseg-cell-{index}")),
            "geometry": {"type": "Polygon",
                         "coordinates": [np.round(r, 2).tolist() for r in rings]},
            "properties": {"objectType": "detection", "name": f"cell {index}",
                           "classification": classification(row, name),
                           "measurements": measurements},
        })
    return {"type": "FeatureCollection", "features": features}


def rle_encode(mask: np.ndarray, origin: tuple[int, int] = (0, 0),
               size: tuple[int, int] | None = None) -> dict:
    """A bool mask as COCO's compressed RLE: {"size": [H, W], "counts": str}.

    Run lengths alternate background/foreground in column-major order, starting with
    background; each is stored as the difference to the run two before (from the
    third on), in 5-bit groups with a continuation bit, offset into printable ASCII.

    Args:
        mask: (h, w) bool: the whole image, or one cell's bounding box of it.
        origin: (row, column) of ``mask``'s top-left pixel in the image.
        size: (H, W) of the image (default: ``mask``'s own), so a cell's RLE is made from
            its box alone, never from an image-sized mask.
    """
    height, width = size or mask.shape
    cols, rows = np.nonzero(np.asarray(mask, bool).T)  # column-major order
    flat = (cols + origin[1]).astype(np.int64) * height + rows + origin[0]
    breaks = np.flatnonzero(np.diff(flat) != 1) + 1
    starts = flat[np.concatenate([[0], breaks])] if flat.size else flat
    stops = flat[np.concatenate([breaks - 1, [flat.size - 1]])] + 1 if flat.size else flat
    bounds = np.concatenate([[0], np.stack([starts, stops], axis=1).ravel(), [height * width]])
    runs = np.diff(bounds).tolist()
    if len(runs) > 1 and runs[-1] == 0:  # foreground to the end: no closing background run
        runs.pop()
    chars = []
    for i, run in enumerate(runs):
        value = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = not ((value == 0 and not group & 0x10) or (value == -1 and group & 0x10))
            chars.append(chr(group + (0x20 if more else 0) + 48))
    return {"size": [int(height), int(width)], "counts": "".join(chars)}


def rle_decode(rle: dict) -> np.ndarray:
    """The bool (H, W) mask of a compressed COCO RLE (the inverse of :func:`rle_encode`)."""
    h, w = rle["size"]
    runs: list[int] = []
    text, pos = rle["counts"], 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            group = ord(text[pos]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift  # negative: sign-extend
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    flat = np.zeros(h * w, bool)
    at = 0
    for i, run in enumerate(runs):
        if i % 2:
            flat[at:at + run] = True
        at += run
    return flat.reshape((h, w), order="F")


def cell_annotation(mask: np.ndarray, origin: tuple[int, int], size: tuple[int, int]) -> dict:
    """One cell's COCO fields (segmentation as RLE, area, bbox) from its mask within its
    bounding box.

    Args:
        mask: (h, w) bool, the cell within its bounding box.
        origin: (row, column) of the box's top-left pixel in the image.
        size: (H, W) of the image.
    """
    return {"segmentation": rle_encode(mask, origin, size), "area": int(mask.sum()),
            "bbox": [int(origin[1]), int(origin[0]), mask.shape[1], mask.shape[0]]}


def coco_annotations(labels: np.ndarray) -> list[dict]:
    """Every cell of a label image as :func:`cell_annotation` fields, in label order, each
    made from its bounding box (cost grows with the cells' area, not with the image's)."""
    from scipy import ndimage

    out = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None:
            out.append(cell_annotation(labels[box] == index, (box[0].start, box[1].start),
                                       labels.shape))
    return out


def coco_dataset(images: list[tuple[str, tuple[int, int], list[dict]]]) -> dict:
    """A COCO instance-segmentation JSON (one category, "cell").

    Args:
        images: (file name, (H, W), :func:`coco_annotations` of its cells) per image.
    """
    out: dict = {"info": {"description": "bloomseg cell instances"},
                 "categories": [{"id": 1, "name": "cell", "supercategory": "cell"}],
                 "images": [], "annotations": []}
    for image_id, (file_name, (h, w), cells) in enumerate(images, start=1):
        out["images"].append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for fields in cells:
            out["annotations"].append({"id": len(out["annotations"]) + 1, "image_id": image_id,
                                       "category_id": 1, **fields, "iscrowd": 0})
    return out
