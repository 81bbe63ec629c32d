"""Images too large to hold in memory: read lazily, predicted block by block, cells merged
across block borders, outputs written as tiled TIFFs.

Each block's core (``block`` px square) is predicted with ``halo`` px of context on every
side, and its cells are labelled in that whole extended region, so a cell cut by the
core's border is seen whole by both blocks that share it (the halo must exceed the
largest cell plus the model's reach). Two neighbouring blocks' labels are compared where
their cores, each grown by half the halo, overlap: labels covering the same pixels there
(IoU > 0.5) are one cell. Every pixel takes its label from the block whose core holds
it; each cell's measurements and outline come from the block that sees it most centrally.

Memory depends on the block size, not on the image: per-block results wait in a
temporary folder beside the outputs, and the TIFFs are written tile by tile.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bloomseg.cells.matching import label_iou
from bloomseg.data.boxes import touches_border
from bloomseg.data.images import TILE, ArrayImage
from bloomseg.data.resampling import GRID
from bloomseg.files import atomic_path, save_json, save_png
from bloomseg.grids import blocks
from bloomseg.inference.options import AUTO
from bloomseg.outputs.options import OutputOptions
from bloomseg.outputs.summary import diameter_fields, save_cell_table

PREVIEW = 2048
"""Longest side of the overlay picture of a large image."""
ESTIMATE_WINDOW = 2048
"""px: the largest side of the central field a large image's cell diameter is estimated
on (a smaller image: all of it, as in memory)."""


def write_tiled(path: Path, shape: tuple[int, int], dtype: type,
                tiles: Iterator[np.ndarray]) -> None:
    """Write a zlib-compressed TIFF of TILE x TILE tiles (given in raster order),
    atomically."""
    import tifffile

    def padded() -> Iterator[np.ndarray]:
        for t in tiles:
            out = np.zeros((TILE, TILE), dtype)
            out[:t.shape[0], :t.shape[1]] = t
            yield out

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, padded(), shape=shape, dtype=dtype, tile=(TILE, TILE),
                         compression="zlib")


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


@dataclass
class _Block:
    """One block's results; arrays wait in files. ``band`` is the core grown by half
    the halo (clipped to the image): the labels kept for matching neighbours."""

    core: tuple[int, int, int, int]
    band: tuple[int, int, int, int]
    ids: np.ndarray  # the local labels with pixels in the core
    top: int  # the largest local label
    cells: dict  # local label -> (centrality, measurement row, outline rings)


def _overlap(a: tuple, b: tuple) -> tuple[int, int, int, int] | None:
    r0, r1, c0, c1 = max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])
    return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None


def _crop(array: np.ndarray, origin: tuple, box: tuple) -> np.ndarray:
    return array[box[0] - origin[0]:box[1] - origin[0], box[2] - origin[2]:box[3] - origin[2]]


BlockDone = Callable[[int, int, tuple[int, int, int, int], np.ndarray], None]
"""Called after each block: (block index, blocks, core (r0, r1, c0, c1), the core's
labels as that block numbered them, or its mask without cells). A viewer shows the image
filling with it; an exception it raises stops the run, its temporary files removed."""


def _halo_needed(segmenter, diameter: float | None) -> int:
    """px of context a block needs to see its cells as the whole image does: a large cell
    (two diameters) plus the model's reach, in the image's pixels at its diameter (a model
    working at smaller cells than the image's reaches further in the image)."""
    model = getattr(segmenter, "model", None)
    reach = getattr(model, "reach", 0)
    if diameter is None or not segmenter.cell_diameter:
        return reach
    return math.ceil(reach * diameter / segmenter.cell_diameter + 2 * diameter)


def segment_large(segmenter, source: ArrayImage, outputs: dict[str, Path],
                  options: OutputOptions = OutputOptions(large=True), progress: bool = False,
                  on_block: BlockDone | None = None) -> tuple[dict, list[dict] | None]:
    """Segment an image block by block and write its outputs.

    Args:
        segmenter: a :class:`bloomseg.inference.segmenter.Segmenter`.
        source: the image (a :class:`~bloomseg.data.images.LazyImage` file or an array).
        outputs: where to write: ``mask`` (tiled TIFF, 0/255), ``overlay`` (PNG, at most
            :data:`PREVIEW` px), ``prob`` (tiled float32 TIFF) with ``save_prob``, and with
            ``cells`` ``labels`` (tiled TIFF), ``cells`` (CSV) and ``geojson``.
        options: cells, the probability, COCO annotations, the block and halo sizes (the
            halo is widened where the cells and the model's reach need more, up to the
            block less one grid step).
        progress: a progress bar over the blocks.
        on_block: called after each block (:data:`BlockDone`).

    Returns:
        (summary fields: width, height, cell_fraction, seconds, and with ``cells`` cells
        and complete_cells; with ``coco``, the cells' COCO annotations, else None).
    """
    from tqdm import tqdm

    from bloomseg.cells.formats import cell_annotation, cell_polygons, label_dtype, polygons_geojson
    from bloomseg.cells.measure import measure_cells
    from bloomseg.figures import label_overlay, overlay

    options.check()
    instances, block, halo = options.cells, options.block, options.halo
    start = time.perf_counter()
    h, w = source.shape
    # one cell diameter for the whole image, estimated (if asked) on its central field,
    rows, cols = min(h, ESTIMATE_WINDOW), min(w, ESTIMATE_WINDOW)
    top, left = (h - rows) // 2, (w - cols) // 2
    central = source.read(top, top + rows, left, left + cols)
    scale = segmenter.scale_of(central if segmenter.diameter == AUTO else None)
    levels = segmenter.levels_of(central)  # and one normalisation
    halo = max(halo, min(block - GRID, _halo_needed(segmenter, scale.diameter)))
    f = max(1, math.ceil(max(h, w) / PREVIEW))
    preview = np.zeros((math.ceil(h / f), math.ceil(w / f), 3), np.uint8)
    preview_mask = np.zeros(preview.shape[:2], bool)
    cores = blocks(h, w, block)
    done: list[_Block] = []
    cell_pixels = 0
    folder = outputs["mask"].parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{outputs['mask'].name}.", suffix=".blocks"))
    try:
        for k, core in enumerate(tqdm(cores, desc=source.path.name, unit="block",
                                      disable=not progress, leave=False)):
            r0, r1, c0, c1 = core
            # context starts on the grid the scaling keeps (data.resampling): at a cell
            # diameter, each block scales onto the pixels of the whole image
            ext = (max(0, (r0 - halo) // GRID * GRID), min(h, r1 + halo),
                   max(0, (c0 - halo) // GRID * GRID), min(w, c1 + halo))
            region = source.read(*ext)
            # slivers are dropped at the image's own edges only, never at a block's
            result = segmenter.predict(region, instances=instances, diameter=scale, classes=False,
                                       origin=(ext[0], ext[2]), levels=levels,
                                       edges=(ext[0] == 0, ext[1] == h, ext[2] == 0, ext[3] == w))
            mask = _crop(result.mask, ext, core)
            cell_pixels += int(mask.sum())
            np.save(tmp / f"mask{k}.npy", mask)
            if options.save_prob:
                np.save(tmp / f"prob{k}.npy", _crop(result.probability, ext, core))
            # the preview samples every f-th pixel of the whole image
            rows, cols = slice((-r0) % f, None, f), slice((-c0) % f, None, f)
            pr, pc = math.ceil(r0 / f), math.ceil(c0 / f)
            sample = _crop(region, ext, core)[rows, cols]
            preview[pr:pr + sample.shape[0], pc:pc + sample.shape[1]] = sample
            preview_mask[pr:pr + sample.shape[0], pc:pc + sample.shape[1]] = mask[rows, cols]
            if on_block is not None:
                on_block(k, len(cores), core, mask if not instances else _crop(result.labels, ext, core))
            if not instances:
                done.append(_Block(core, core, np.zeros(0, np.int64), 0, {}))
                continue
            labels = result.labels
            band = (max(0, r0 - halo // 2), min(h, r1 + halo // 2),
                    max(0, c0 - halo // 2), min(w, c1 + halo // 2))
            np.save(tmp / f"labels{k}.npy", _crop(labels, ext, band))
            ids = np.unique(_crop(labels, ext, core))
            ids = ids[ids > 0]
            kept = np.where(np.isin(labels, ids), labels, 0)
            rings = cell_polygons(kept)
            cells = {}
            for row in measure_cells(kept, region):
                # to whole-image coordinates; centrality: how deep inside the core it lies
                row["centroid_x"] = round(row["centroid_x"] + ext[2], 2)
                row["centroid_y"] = round(row["centroid_y"] + ext[0], 2)
                row["bbox_x"] += ext[2]
                row["bbox_y"] += ext[0]
                row["touches_border"] = bool(touches_border(
                    row["bbox_x"], row["bbox_y"], row["bbox_x"] + row["bbox_width"],
                    row["bbox_y"] + row["bbox_height"], h, w))
                x, y = row["centroid_x"], row["centroid_y"]
                centrality = min(x - c0, c1 - x, y - r0, r1 - y)
                outline = [r + np.array([ext[2], ext[0]]) for r in rings.get(row["id"], [])]
                cells[row["id"]] = (centrality, row, outline)
            done.append(_Block(core, band, ids, int(labels.max(initial=0)), cells))

        columns = math.ceil(w / block)
        luts, count, chosen = _merge(done, tmp, columns) if instances else ([], 0, {})
        stats = {"width": w, "height": h, "cell_fraction": f"{cell_pixels / (h * w):.6f}",
                 **diameter_fields(result.scale)}  # every block is predicted at one scale

        def crop(kind: str, box: tuple[int, int, int, int], k: int) -> np.ndarray:
            """Block k's ``kind`` array over ``box`` (inside its core), labels as cell ids.
            Each read maps the file anew: a mapping kept open keeps its pages resident."""
            b = done[k]
            stored = np.load(tmp / f"{kind}{k}.npy", mmap_mode="r")
            data = np.asarray(_crop(stored, b.band if kind == "labels" else b.core, box))
            return luts[k][data] if kind == "labels" else data

        def tiles(kind: str, convert) -> Iterator[np.ndarray]:
            for r in range(0, h, TILE):
                for c in range(0, w, TILE):
                    k = (r // block) * columns + c // block
                    yield convert(crop(kind, (r, min(r + TILE, h), c, min(c + TILE, w)), k))

        write_tiled(outputs["mask"], (h, w), np.uint8,
                    tiles("mask", lambda t: t.astype(np.uint8) * 255))
        if options.save_prob:
            write_tiled(outputs["prob"], (h, w), np.float32,
                        tiles("prob", lambda t: t.astype(np.float32)))
        annotations = None
        if instances:
            dtype = label_dtype(count)
            write_tiled(outputs["labels"], (h, w), dtype,
                        tiles("labels", lambda t: t.astype(dtype)))
            rows = [chosen[i][1] for i in sorted(chosen)]
            save_cell_table(outputs["cells"], rows, diameter_fields(result.scale), named=False)
            save_json(outputs["geojson"], polygons_geojson(
                {i: c[2] for i, c in chosen.items() if c[2]}, rows), indent=None)
            preview_labels = np.zeros(preview.shape[:2], np.int64)
            for k, b in enumerate(done):
                r0, r1, c0, c1 = b.core
                rows_, cols_ = slice((-r0) % f, None, f), slice((-c0) % f, None, f)
                band = np.load(tmp / f"labels{k}.npy", mmap_mode="r")
                sample = luts[k][np.asarray(_crop(band, b.band, b.core)[rows_, cols_])]
                pr, pc = math.ceil(r0 / f), math.ceil(c0 / f)
                preview_labels[pr:pr + sample.shape[0], pc:pc + sample.shape[1]] = sample
            save_png(outputs["overlay"], label_overlay(preview, preview_labels))
            stats.update(cells=count, complete_cells=sum(not c[1]["touches_border"]
                                                         for c in chosen.values()))
            if options.coco:
                annotations = []
                for cell, (r0, r1, c0, c1) in enumerate(_cell_boxes(done, luts, tmp, count), 1):
                    mask = np.zeros((r1 - r0, c1 - c0), bool)
                    # the written labels come from the cores: those of the blocks it spans
                    for k in (i * columns + j for i in range(r0 // block, (r1 - 1) // block + 1)
                              for j in range(c0 // block, (c1 - 1) // block + 1)):
                        part = _overlap(cores[k], (r0, r1, c0, c1))
                        mask[part[0] - r0:part[1] - r0, part[2] - c0:part[3] - c0] = \
                            crop("labels", part, k) == cell
                    annotations.append(cell_annotation(mask, (r0, c0), (h, w)))
        else:
            save_png(outputs["overlay"], overlay(preview, preview_mask))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stats["seconds"] = f"{time.perf_counter() - start:.3f}"
    return stats, annotations


def _cell_boxes(done: list[_Block], luts: list[np.ndarray], tmp: Path, count: int
                ) -> list[tuple[int, int, int, int]]:
    """Each cell's bounding box (r0, r1, c0, c1) in the written label image: the union of
    its local labels' boxes within the cores of the blocks they come from."""
    from scipy import ndimage

    boxes = np.array([[np.iinfo(np.int64).max, 0] * 2] * (count + 1), np.int64)
    for k, b in enumerate(done):
        local = np.asarray(_crop(np.load(tmp / f"labels{k}.npy", mmap_mode="r"), b.band, b.core))
        for label, box in enumerate(ndimage.find_objects(local), start=1):
            cell = luts[k][label] if box is not None else 0
            if cell:
                r0, r1 = box[0].start + b.core[0], box[0].stop + b.core[0]
                c0, c1 = box[1].start + b.core[2], box[1].stop + b.core[2]
                boxes[cell] = (min(boxes[cell, 0], r0), max(boxes[cell, 1], r1),
                               min(boxes[cell, 2], c0), max(boxes[cell, 3], c1))
    return [tuple(int(v) for v in box) for box in boxes[1:]]


def _merge(blocks: list[_Block], tmp: Path, columns: int) -> tuple[list[np.ndarray], int, dict]:
    """One id per cell across blocks.

    Returns:
        (per block, a table local label -> cell id 1..N; N; {cell id: (centrality, row
        with ``id`` set, outline)} from the block that sees each cell most centrally).
    """
    offsets = np.cumsum([0] + [b.top + 1 for b in blocks]).tolist()
    sets = _UnionFind(offsets[-1])
    for k, a in enumerate(blocks):
        i, j = divmod(k, columns)
        # each neighbour once: right, and the three below
        for m in (k + 1 if j + 1 < columns else None, *(
                (i + 1) * columns + jj for jj in (j - 1, j, j + 1) if 0 <= jj < columns)):
            if m is None or m >= len(blocks):
                continue
            b = blocks[m]
            box = _overlap(a.band, b.band)
            if box is None:
                continue
            la = _crop(np.load(tmp / f"labels{k}.npy", mmap_mode="r"), a.band, box)
            lb = _crop(np.load(tmp / f"labels{m}.npy", mmap_mode="r"), b.band, box)
            # labels covering the same pixels there (IoU > 0.5) are one cell
            for x, y in np.argwhere(label_iou(np.asarray(la), np.asarray(lb)) > 0.5) + 1:
                sets.union(offsets[k] + int(x), offsets[m] + int(y))
    roots = sorted({sets.find(offsets[k] + int(i)) for k, b in enumerate(blocks) for i in b.ids})
    number = {root: n for n, root in enumerate(roots, start=1)}
    luts, chosen = [], {}
    for k, b in enumerate(blocks):
        lut = np.zeros(b.top + 1, np.int64)
        for i in b.ids.tolist():
            cell = lut[i] = number[sets.find(offsets[k] + i)]
            centrality, row, outline = b.cells[i]
            if cell not in chosen or centrality > chosen[cell][0]:
                chosen[cell] = (centrality, row | {"id": cell}, outline)
        luts.append(lut)
    return luts, len(roots), chosen
