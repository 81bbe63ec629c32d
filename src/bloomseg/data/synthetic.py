"""Synthetic smears with known masks and boxes: for tests, the notebook, and a first run
where no real smears are at hand. They are labelled synthetic wherever they are written;
no figure about real smears comes from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloomseg.data.boxes import xyxy_to_yolo_lines
from bloomseg.settings import COUNT, Range

Cell = tuple[float, float, float]  # centre row, centre column, radius (px)


def smear(rng: np.random.Generator, height: int, width: int, cells: list[Cell] | None = None,
          radius: tuple[float, float] = (6, 12), density: float = 1 / 900) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic smear: stained disks (cells) with pale centres on a light background.

    Args:
        rng: the random generator (the smear is a function of its state).
        height, width: image size, px.
        cells: filled with the (cy, cx, r) of every disk drawn, if given.
        radius: smallest and largest cell radius, px.
        density: cells per px of image (at least 2 are drawn).

    Returns:
        (H, W, 3) uint8 image and its (H, W) bool cell mask.
    """
    mask = np.zeros((height, width), bool)
    centre = np.zeros((height, width), bool)
    for _ in range(max(2, int(height * width * density))):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(*radius)
        # draw within the disk's box: whole-image grids cost too much for big smears
        r0, r1 = max(0, int(cy - r) - 1), min(height, int(cy + r) + 2)
        c0, c1 = max(0, int(cx - r) - 1), min(width, int(cx + r) + 2)
        yy, xx = np.mgrid[r0:r1, c0:c1]
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        mask[r0:r1, c0:c1] |= d2 <= r * r
        centre[r0:r1, c0:c1] |= d2 <= (r / 3) ** 2
        if cells is not None:
            cells.append((cy, cx, r))
    image = np.empty((height, width, 3), np.uint8)
    rows = max(1, 2**22 // (3 * width))  # noise in bands of about 4M values, same stream
    for a in range(0, height, rows):
        band = np.empty((min(rows, height - a), width, 3), np.float64)
        band[:] = (236, 226, 232)
        band[mask[a:a + rows]] = (205, 120, 135)
        band[(centre & mask)[a:a + rows]] = (220, 160, 170)
        band += rng.normal(0, 6, band.shape)
        image[a:a + rows] = np.clip(band, 0, 255).astype(np.uint8)
    return image, mask


def yolo_lines(cells: list[Cell], height: int, width: int) -> str:
    """YOLO box lines (class 0, red cell) of disks (cy, cx, r), clipped to the image."""
    boxes = np.array([(cx - r, cy - r, cx + r, cy + r) for cy, cx, r in cells], np.float64)
    return xyxy_to_yolo_lines(boxes.reshape(-1, 4), height, width)


def write_dataset(root: str | Path, n_train: int = 6, n_test: int = 2,
                  size: tuple[int, int] = (60, 80), seed: int = 0, boxes: bool = False,
                  radius: tuple[float, float] = (6, 12), density: float = 1 / 900) -> Path:
    """A dataset folder in the layout ``bloomseg`` reads (``{train,test}/{original,mask}``,
    and ``boxes/`` with a YOLO box per disk if asked), of synthetic smears.

    Args:
        root: the folder to write (created).
        n_train, n_test: images per split.
        size: (height, width) of each image.
        seed: the smears are a function of it.
        boxes: also write the boxes.
        radius, density: as in :func:`smear`.

    Returns:
        ``root`` as a Path.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            cells: list[Cell] = []
            image, mask = smear(rng, *size, cells=cells, radius=radius, density=density)
            for sub, array in (("original", image), ("mask", mask.astype(np.uint8) * 255)):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / split / sub / f"{split}_{i:02d}.png")
            if boxes:
                (root / split / "boxes").mkdir(parents=True, exist_ok=True)
                (root / split / "boxes" / f"{split}_{i:02d}.txt").write_text(
                    yolo_lines(cells, *size))
    return root


REAL_SCALE = {"size": (600, 800), "radius": (38.0, 52.0), "density": 1 / 14000}
"""Settings of smears with cells the size of red cells in BBBC041's 1600x1200 images."""


def write_slide(path: str | Path, side: int, seed: int = 0) -> None:
    """A square synthetic smear of cells the real smears' size, written as a tiled,
    zlib-compressed TIFF (as whole-slide scans are), for benchmarks of large images."""
    import tifffile

    from bloomseg.data.images import TILE

    image, _ = smear(np.random.default_rng(seed), side, side, radius=REAL_SCALE["radius"],
                     density=REAL_SCALE["density"])
    tifffile.imwrite(path, image, tile=(TILE, TILE), compression="zlib")


IMAGES = Range(int, 0, 10_000)
"""Images a split of a synthetic dataset may have."""
MARKER = "SYNTHETIC.txt"


def write_example_dataset(root: str | Path, n_train: int = 4, n_test: int = 2, seed: int = 0,
                          overwrite: bool = False) -> Path:
    """A small dataset of synthetic smears at the real smears' cell size, with boxes,
    marked synthetic (:data:`MARKER`): ``bloomseg synthetic``.

    Raises:
        ConfigError: an image count out of :data:`IMAGES` or a negative seed.
        OutputExistsError: ``root`` is not empty and ``overwrite`` is False.
    """
    from bloomseg.files import refuse_existing

    IMAGES.check("n_train", n_train)
    IMAGES.check("n_test", n_test)
    COUNT.check("seed", seed)
    root = Path(root)
    refuse_existing(sorted(root.iterdir())[:1] if root.is_dir() else [], overwrite,
                    f"{root} is not empty; pass --overwrite to write into it")
    write_dataset(root, n_train, n_test, seed=seed, boxes=True, **REAL_SCALE)
    (root / MARKER).write_text(
        "Synthetic smears made by `bloomseg synthetic`: drawn disks, not real cells.\n"
        "No figure about real blood smears may be taken from them.\n", "utf-8")
    return root


TYPED_CLASSES = ("red_blood_cell", "ring", "white_blood_cell", "platelet")
"""The box classes of :func:`typed_smear` (ids 0..3), as its ``classes.txt`` names them."""


def typed_smear(rng: np.random.Generator, height: int, width: int, count: int = 12,
                radius: float = 10.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic smear of cells of four drawn kinds, apart from each other: pale pink
    disks (red cells), pink disks with a dark dot (ring-stage infections), large disks
    with a lobed purple nucleus (white cells) and small purple dots (platelets).

    Args:
        rng: the random generator (the smear is a function of its state).
        height, width: image size, px.
        count: cells to place (fewer where there is no room).
        radius: a red cell's radius, px.

    Returns:
        (H, W, 3) uint8 image, (H, W) int32 labels (cells 1..N, in the order drawn), (N, 5)
        YOLO boxes (class id of :data:`TYPED_CLASSES`, cx, cy, w, h).
    """
    kinds = rng.permutation(np.arange(count) % 4)
    size = {0: radius, 1: radius, 2: 1.6 * radius, 3: 0.35 * radius}
    image = np.empty((height, width, 3), np.float64)
    image[:] = (236, 226, 232)
    labels = np.zeros((height, width), np.int32)
    yy, xx = np.mgrid[:height, :width]
    placed: list[tuple[float, float, float, int]] = []
    for kind in kinds:
        r = size[int(kind)]
        for _ in range(200):  # a free spot, a gap of 3 px from every other cell
            cy, cx = rng.uniform(r + 1, height - r - 1), rng.uniform(r + 1, width - r - 1)
            if all(np.hypot(cy - y, cx - x) > r + q + 3 for y, x, q, _ in placed):
                placed.append((cy, cx, r, int(kind)))
                break
    boxes = []
    for n, (cy, cx, r, kind) in enumerate(placed, start=1):
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        labels[disk] = n
        if kind == 3:
            image[disk] = (120, 70, 160)
        elif kind == 2:
            image[disk] = (190, 160, 205)
            angle = rng.uniform(0, 2 * np.pi)
            for k in range(3):  # three lobes around the middle
                a = angle + k * 2 * np.pi / 3
                lobe = (yy - cy - 0.35 * r * np.sin(a)) ** 2 + (xx - cx - 0.35 * r * np.cos(a)) ** 2
                image[lobe <= (0.4 * r) ** 2] = (90, 40, 140)
        else:
            image[disk] = (205, 120, 135)
            image[disk & ((yy - cy) ** 2 + (xx - cx) ** 2 <= (r / 3) ** 2)] = (220, 160, 170)
            if kind == 1:
                a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.6) * r
                dot = (yy - cy - d * np.sin(a)) ** 2 + (xx - cx - d * np.cos(a)) ** 2
                image[dot <= (0.22 * r) ** 2] = (70, 20, 110)
        rows, cols = np.nonzero(labels == n)
        boxes.append((kind, (cols.min() + cols.max() + 1) / 2 / width,
                      (rows.min() + rows.max() + 1) / 2 / height,
                      (cols.max() + 1 - cols.min()) / width, (rows.max() + 1 - rows.min()) / height))
    image += rng.normal(0, 4, image.shape)
    return (np.clip(image, 0, 255).astype(np.uint8), labels,
            np.array(boxes, np.float64).reshape(-1, 5))


def write_typed_dataset(root: str | Path, n_train: int = 6, n_val: int = 2, n_test: int = 2,
                        size: tuple[int, int] = (96, 128), seed: int = 0) -> Path:
    """A dataset of :func:`typed_smear` images: ``{train,val,test}/{original,mask,boxes}``
    and ``classes.txt``.

    Returns:
        ``root`` as a Path.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    # every stage is named: its annotator labels infections, though only rings are drawn
    names = TYPED_CLASSES + ("trophozoite", "schizont", "gametocyte")
    (root / "classes.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names)))
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for sub in ("original", "mask", "boxes"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, labels, boxes = typed_smear(rng, *size)
            stem = f"{split}_{i:02d}"
            Image.fromarray(image).save(root / split / "original" / f"{stem}.png")
            Image.fromarray((labels > 0).astype(np.uint8) * 255).save(
                root / split / "mask" / f"{stem}.png")
            (root / split / "boxes" / f"{stem}.txt").write_text("".join(
                f"{int(b[0])} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f} {b[4]:.6f}\n" for b in boxes))
    return root
