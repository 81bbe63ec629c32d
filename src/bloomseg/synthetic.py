"""Synthetic smears with known masks and boxes: for tests, the notebook, and a first run
where no real smears are at hand. They are labelled synthetic wherever they are written;
no figure about real smears comes from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    lines = []
    for cy, cx, r in cells:
        x0, x1 = max(0.0, cx - r), min(float(width), cx + r)
        y0, y1 = max(0.0, cy - r), min(float(height), cy + r)
        if x1 > x0 and y1 > y0:
            lines.append(f"0 {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                         f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return "\n".join(lines) + "\n"


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
