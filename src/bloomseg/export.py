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

from bloomseg.errors import ImageError
from bloomseg.io import atomic_output

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


def read_labels(path: str | Path) -> np.ndarray:
    """A label image from a TIFF or PNG as int64 (H, W), without rescaling values.

    Raises:
        ImageError: unreadable, or not a single-channel integer image.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as img:
                data = np.asarray(img)
    except Exception as e:  # tifffile and PIL raise many types for bad files
        raise ImageError(f"{path}: not a readable label image ({type(e).__name__}: {e})") from None
    data = np.squeeze(data)
    if data.ndim != 2 or not np.issubdtype(data.dtype, np.integer):
        raise ImageError(f"{path}: a label image must be one integer channel, got "
                         f"{data.shape} {data.dtype}")
    return data.astype(np.int64)


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


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
    from skimage.measure import approximate_polygon, find_contours

    out: dict[int, list[np.ndarray]] = {}
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        r0, c0 = box[0].start, box[1].start
        crop = np.pad(labels[box] == index, 1).astype(np.float32)
        rings = []
        for contour in find_contours(crop, 0.5):
            # contour points are (row, col) in the padded crop's pixel-centre indices:
            # index i sits at coordinate i - 1 + 0.5 of the image
            ring = np.stack([contour[:, 1] + c0 - 0.5, contour[:, 0] + r0 - 0.5], axis=1)
            ring = approximate_polygon(ring, tolerance) if tolerance > 0 else ring
            if len(ring) >= 4:
                rings.append(ring)
        if not rings:
            continue
        rings.sort(key=lambda r: -abs(_ring_area(r)))
        oriented = [r if (_ring_area(r) > 0) == (i == 0) else r[::-1] for i, r in enumerate(rings)]
        out[index] = oriented
    return out


def geojson_features(labels: np.ndarray, rows: list[dict], name: str = "Cell") -> dict:
    """A FeatureCollection of one Polygon per cell that QuPath imports as detections.

    Args:
        labels: (H, W) cell labels.
        rows: per-cell measurements (:func:`bloomseg.measure.measure_cells`), keyed by ``id``.
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
        measurements = {k: float(v) for k, v in row.items() if k != "id"}
        features.append({
            "type": "Feature",
            "id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"bloomseg-cell-{index}")),
            "geometry": {"type": "Polygon",
                         "coordinates": [np.round(r, 2).tolist() for r in rings]},
            "properties": {"objectType": "detection", "name": f"cell {index}",
                           "classification": {"name": name, "color": [220, 60, 90]},
                           "measurements": measurements},
        })
    return {"type": "FeatureCollection", "features": features}


def rle_encode(mask: np.ndarray) -> dict:
    """A bool (H, W) mask as COCO's compressed RLE: {"size": [H, W], "counts": str}.

    Run lengths alternate background/foreground in column-major order, starting with
    background; each is stored as the difference to the run two before (from the
    third on), in 5-bit groups with a continuation bit, offset into printable ASCII.
    """
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs  # the first run counts background
    chars = []
    for i, run in enumerate(runs):
        value = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = not ((value == 0 and not group & 0x10) or (value == -1 and group & 0x10))
            chars.append(chr(group + (0x20 if more else 0) + 48))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": "".join(chars)}


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


def coco_dataset(images: list[tuple[str, np.ndarray]]) -> dict:
    """A COCO instance-segmentation JSON (one category, "cell") of labelled images.

    Args:
        images: (file name, (H, W) labels) per image.
    """
    from scipy import ndimage

    out: dict = {"info": {"description": "bloomseg cell instances"},
                 "categories": [{"id": 1, "name": "cell", "supercategory": "cell"}],
                 "images": [], "annotations": []}
    for image_id, (file_name, labels) in enumerate(images, start=1):
        h, w = labels.shape
        out["images"].append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            mask = np.zeros((h, w), bool)
            mask[box] = labels[box] == index
            out["annotations"].append({
                "id": len(out["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                "segmentation": rle_encode(mask), "area": int(mask[box].sum()),
                "bbox": [box[1].start, box[0].start, box[1].stop - box[1].start,
                         box[0].stop - box[0].start],
                "iscrowd": 0,
            })
    return out
