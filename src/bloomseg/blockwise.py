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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from bloomseg.errors import ImageError
from bloomseg.io import (MAX_PIXELS, atomic_path, check_pixels, header_shape, read_image,
                         save_csv, save_json, save_png, to_rgb)
from bloomseg.matching import label_iou

LARGE_PIXELS = 6000 * 6000
"""Images with more pixels than this are predicted block-wise unless told otherwise."""
TILE = 256
"""Tile side of the TIFFs written; the block side is a multiple of it."""
PREVIEW = 2048
"""Longest side of the overlay picture of a large image."""


def _open_tiff(path: Path):
    """(lazy array, planar) of a TIFF's first series, full resolution."""
    import tifffile
    import zarr

    with tifffile.TiffFile(path) as tif:
        axes = tif.series[0].axes
    if axes not in ("YX", "YXS", "SYX"):
        raise ImageError(f"{path}: a TIFF of axes {axes} is not one 2D image (YX, YXS or SYX)")
    store = tifffile.imread(path, aszarr=True, series=0, level=0)
    return zarr.open(store, mode="r"), axes == "SYX", store


class LazyImage:
    """An image read region by region: TIFF (through tifffile's zarr store) and zarr
    arrays lazily, other formats decoded once. Use it as a context manager.

    Args:
        path: the file.
        max_pixels: refuse larger images (None: no limit); see :func:`bloomseg.io.read_image`.

    Attributes:
        path: the file.
        shape: (H, W).

    Raises:
        ImageError: naming the file: missing, unreadable, not one 2D image, or too large.
    """

    def __init__(self, path: str | Path, max_pixels: int | None = MAX_PIXELS) -> None:
        self.path = Path(path)
        self._planar, self._peak, self._store = False, None, None
        suffix = self.path.suffix.lower()
        if not self.path.exists():
            raise ImageError(f"{self.path}: no such image file")
        try:
            if suffix in (".tif", ".tiff"):
                self._array, self._planar, self._store = _open_tiff(self.path)
            elif suffix == ".zarr":
                import zarr

                self._array = zarr.open_array(self.path, mode="r")
            else:
                self._array = read_image(self.path, max_pixels)
        except ImageError:
            raise
        except Exception as e:  # tifffile and zarr raise many types for bad files
            raise ImageError(f"{self.path}: not an image bloomseg can read "
                             f"({type(e).__name__}: {e})") from None
        shape = self._array.shape
        problem = f"unsupported image shape {shape}" if len(shape) not in (2, 3) else None
        if problem is None:
            self.shape = (int(shape[1]), int(shape[2])) if self._planar else (int(shape[0]), int(shape[1]))
            if 0 in self.shape:
                problem = f"the image has no pixels ({self.shape[1]}x{self.shape[0]})"
        if problem:
            self.close()
            raise ImageError(f"{self.path}: {problem}")
        try:
            check_pixels(self.path, *self.shape, max_pixels)
        except ImageError:
            self.close()
            raise

    def _raw(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        if self._planar:
            return np.moveaxis(np.asarray(self._array[:, r0:r1, c0:c1]), 0, -1)
        return np.asarray(self._array[r0:r1, c0:c1])

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows r0:r1, columns c0:c1 as (h, w, 3) uint8 RGB."""
        try:
            if self._peak is None and np.dtype(self._array.dtype) not in (np.uint8, bool):
                # every region must be scaled alike: by the whole image's peak, found
                # once with one more pass over the image
                self._peak = max(float(np.nanmax(self._raw(*box), initial=0))
                                 for box in block_grid(*self.shape, 4 * TILE))
            raw = self._raw(r0, r1, c0, c1)
        except Exception as e:
            raise ImageError(f"{self.path}: rows {r0}-{r1}, columns {c0}-{c1} cannot be read "
                             f"({type(e).__name__}: {e})") from None
        return to_rgb(raw, self.path, self._peak)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> "LazyImage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def image_pixels(path: str | Path) -> int:
    """H * W of an image from its header, without decoding it (0 where unknown)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff", ".zarr"):
            with LazyImage(path, max_pixels=None) as image:
                return image.shape[0] * image.shape[1]
        height, width = header_shape(path)
        return height * width
    except Exception:  # the full read that follows reports what is wrong
        return 0


def block_grid(height: int, width: int, block: int) -> list[tuple[int, int, int, int]]:
    """Cores (r0, r1, c0, c1) of side ``block`` (smaller at the far edges), raster order."""
    return [(r, min(r + block, height), c, min(c + block, width))
            for r in range(0, height, block) for c in range(0, width, block)]


def check_blocks(block: int, halo: int) -> None:
    """Raise ValueError naming an invalid block side or halo."""
    if block <= 0 or block % TILE:
        raise ValueError(f"block {block} must be a positive multiple of {TILE}")
    if not 0 <= halo < block:
        raise ValueError(f"halo {halo} must be at least 0 and under the block ({block})")


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


def segment_large(segmenter, source: LazyImage, outputs: dict[str, Path], instances: bool,
                  save_prob: bool = False, block: int = 2048, halo: int = 256,
                  progress: bool = False) -> dict:
    """Segment an image block by block and write its outputs.

    Args:
        segmenter: a :class:`bloomseg.predict.Segmenter`.
        source: the image.
        outputs: where to write: ``mask`` (tiled TIFF, 0/255), ``overlay`` (PNG, at most
            :data:`PREVIEW` px), ``prob`` (tiled float32 TIFF) with ``save_prob``, and with
            ``instances`` ``labels`` (tiled TIFF), ``cells`` (CSV) and ``geojson``.
        instances: label cells.
        block: core side, px, a multiple of :data:`TILE`.
        halo: context on each side of a core, px.
        progress: a progress bar over the blocks.

    Returns:
        Summary fields: width, height, cell_fraction, seconds, and with ``instances``
        cells and complete_cells.
    """
    from tqdm import tqdm

    from bloomseg.export import cell_polygons, label_dtype, polygons_geojson
    from bloomseg.figures import label_overlay, overlay
    from bloomseg.measure import COLUMNS, measure_cells

    check_blocks(block, halo)
    start = time.perf_counter()
    h, w = source.shape
    f = max(1, math.ceil(max(h, w) / PREVIEW))
    preview = np.zeros((math.ceil(h / f), math.ceil(w / f), 3), np.uint8)
    preview_mask = np.zeros(preview.shape[:2], bool)
    cores = block_grid(h, w, block)
    blocks: list[_Block] = []
    cell_pixels = 0
    folder = outputs["mask"].parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{outputs['mask'].name}.", suffix=".blocks"))
    try:
        for k, core in enumerate(tqdm(cores, desc=source.path.name, unit="block",
                                      disable=not progress, leave=False)):
            r0, r1, c0, c1 = core
            ext = (max(0, r0 - halo), min(h, r1 + halo), max(0, c0 - halo), min(w, c1 + halo))
            region = source.read(*ext)
            # slivers are dropped at the image's own edges only, never at a block's
            result = segmenter.predict(region, instances=instances,
                                       edges=(ext[0] == 0, ext[1] == h, ext[2] == 0, ext[3] == w))
            mask = _crop(result.mask, ext, core)
            cell_pixels += int(mask.sum())
            np.save(tmp / f"mask{k}.npy", mask)
            if save_prob:
                np.save(tmp / f"prob{k}.npy", _crop(result.probability, ext, core))
            # the preview samples every f-th pixel of the whole image
            rows, cols = slice((-r0) % f, None, f), slice((-c0) % f, None, f)
            pr, pc = math.ceil(r0 / f), math.ceil(c0 / f)
            sample = _crop(region, ext, core)[rows, cols]
            preview[pr:pr + sample.shape[0], pc:pc + sample.shape[1]] = sample
            preview_mask[pr:pr + sample.shape[0], pc:pc + sample.shape[1]] = mask[rows, cols]
            if not instances:
                blocks.append(_Block(core, core, np.zeros(0, np.int64), 0, {}))
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
                row["touches_border"] = bool(
                    row["bbox_x"] == 0 or row["bbox_y"] == 0 or
                    row["bbox_x"] + row["bbox_width"] == w or row["bbox_y"] + row["bbox_height"] == h)
                x, y = row["centroid_x"], row["centroid_y"]
                centrality = min(x - c0, c1 - x, y - r0, r1 - y)
                outline = [r + np.array([ext[2], ext[0]]) for r in rings.get(row["id"], [])]
                cells[row["id"]] = (centrality, row, outline)
            blocks.append(_Block(core, band, ids, int(labels.max(initial=0)), cells))

        columns = math.ceil(w / block)
        luts, count, chosen = _merge(blocks, tmp, columns) if instances else ([], 0, {})
        stats = {"width": w, "height": h, "cell_fraction": f"{cell_pixels / (h * w):.6f}"}

        def tiles(kind: str, convert) -> Iterator[np.ndarray]:
            for r in range(0, h, TILE):
                for c in range(0, w, TILE):
                    k = (r // block) * columns + c // block
                    b = blocks[k]
                    origin = b.band if kind == "labels" else b.core
                    data = np.load(tmp / f"{kind}{k}.npy", mmap_mode="r")
                    box = (r, min(r + TILE, h), c, min(c + TILE, w))
                    yield convert(np.asarray(_crop(data, origin, box)), k)

        write_tiled(outputs["mask"], (h, w), np.uint8,
                    tiles("mask", lambda t, k: t.astype(np.uint8) * 255))
        if save_prob:
            write_tiled(outputs["prob"], (h, w), np.float32,
                        tiles("prob", lambda t, k: t.astype(np.float32)))
        if instances:
            dtype = label_dtype(count)
            write_tiled(outputs["labels"], (h, w), dtype,
                        tiles("labels", lambda t, k: luts[k][t].astype(dtype)))
            rows = [chosen[i][1] for i in sorted(chosen)]
            save_csv(outputs["cells"], rows, COLUMNS)
            save_json(outputs["geojson"], polygons_geojson(
                {i: c[2] for i, c in chosen.items() if c[2]}, rows))
            preview_labels = np.zeros(preview.shape[:2], np.int64)
            for k, b in enumerate(blocks):
                r0, r1, c0, c1 = b.core
                rows_, cols_ = slice((-r0) % f, None, f), slice((-c0) % f, None, f)
                band = np.load(tmp / f"labels{k}.npy", mmap_mode="r")
                sample = luts[k][np.asarray(_crop(band, b.band, b.core)[rows_, cols_])]
                pr, pc = math.ceil(r0 / f), math.ceil(c0 / f)
                preview_labels[pr:pr + sample.shape[0], pc:pc + sample.shape[1]] = sample
            save_png(outputs["overlay"], label_overlay(preview, preview_labels))
            stats.update(cells=count, complete_cells=sum(not c[1]["touches_border"]
                                                         for c in chosen.values()))
        else:
            save_png(outputs["overlay"], overlay(preview, preview_mask))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stats["seconds"] = f"{time.perf_counter() - start:.3f}"
    return stats


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
        for l in (k + 1 if j + 1 < columns else None, *(
                (i + 1) * columns + jj for jj in (j - 1, j, j + 1) if 0 <= jj < columns)):
            if l is None or l >= len(blocks):
                continue
            b = blocks[l]
            box = _overlap(a.band, b.band)
            if box is None:
                continue
            la = _crop(np.load(tmp / f"labels{k}.npy", mmap_mode="r"), a.band, box)
            lb = _crop(np.load(tmp / f"labels{l}.npy", mmap_mode="r"), b.band, box)
            # labels covering the same pixels there (IoU > 0.5) are one cell
            for x, y in np.argwhere(label_iou(np.asarray(la), np.asarray(lb)) > 0.5) + 1:
                sets.union(offsets[k] + int(x), offsets[l] + int(y))
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
