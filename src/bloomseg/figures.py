"""Pictures people look at: mask overlays, error maps, and saving matplotlib figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloomseg.files import atomic_output


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100) -> None:
    """Write a matplotlib figure as PNG, atomically, and free it."""
    with atomic_output(path) as f:
        fig.savefig(f, format="png", dpi=dpi)
    pyplot().close(fig)


def outline(mask: np.ndarray) -> np.ndarray:
    """The border pixels of a bool (H, W) mask: cell pixels with a background neighbour."""
    return inner_edges(np.asarray(mask, bool))


def overlay(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 255, 0),
            alpha: float = 0.3) -> np.ndarray:
    """The image with cells tinted and outlined.

    Args:
        image: (H, W, 3) uint8.
        mask: (H, W) bool.

    Returns:
        (H, W, 3) uint8.
    """
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.array(colour, np.float32)
    out[outline(mask)] = colour
    return out.round().astype(np.uint8)


def error_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """True positives green, false positives red, false negatives blue, true negatives
    black: (H, W, 3) uint8 from two (H, W) bool masks."""
    out = np.zeros((*pred.shape, 3), np.uint8)
    out[pred & target] = (0, 255, 0)
    out[pred & ~target] = (255, 0, 0)
    out[~pred & target] = (0, 0, 255)
    return out


def label_colours(count: int) -> np.ndarray:
    """(count + 1, 3) uint8 colours for labels 0..count: black, then well-spread bright
    hues (golden-ratio steps), the same for the same label every time."""
    import colorsys

    hues = (np.arange(1, count + 1) * 0.618033988749895) % 1.0
    colours = [colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues]
    return np.round(np.array([(0.0, 0.0, 0.0)] + colours) * 255).astype(np.uint8)


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.25,
                  colours: np.ndarray | None = None) -> np.ndarray:
    """The image with each cell tinted and outlined in its own colour, so touching cells
    show where they part (or in the colour of its class).

    Args:
        image: (H, W, 3) uint8.
        labels: (H, W) integer cells 1..N, 0 background.
        colours: (N, 3) uint8 RGB per cell (default: a distinct colour each).

    Returns:
        (H, W, 3) uint8.
    """
    count = int(labels.max(initial=0))
    table = label_colours(count) if colours is None else np.concatenate(
        [np.zeros((1, 3), np.uint8), np.asarray(colours, np.uint8).reshape(count, 3)])
    # the blend of every colour level with every image level, looked up: twice as fast as
    # blending the pixels (the same float32 steps, so the same values); row 256 is the
    # background's, the image as it is
    levels = np.arange(256, dtype=np.float32)
    blend = np.concatenate([((1 - alpha) * levels + alpha * levels[:, None]).round(),
                            levels[None]]).astype(np.uint8)
    rows = table.astype(np.int32)
    rows[0] = 256
    out = blend.ravel()[rows[labels] * 256 + image]
    edges = inner_edges(labels)
    out[edges] = table[labels[edges]]
    return out


def inner_edges(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: the cells' pixels beside (4-connected) a pixel of another cell or the
    background: skimage's ``find_boundaries(mode="inner")`` within the cells."""
    differs = np.zeros(labels.shape, bool)
    down, right = labels[:-1] != labels[1:], labels[:, :-1] != labels[:, 1:]
    differs[:-1] |= down
    differs[1:] |= down
    differs[:, :-1] |= right
    differs[:, 1:] |= right
    return differs & (labels > 0)


def cell_gallery(image: np.ndarray, labels: np.ndarray, cells: list[int], side: int = 96,
                 columns: int = 8, colour: tuple[int, int, int] = (250, 200, 0)) -> np.ndarray:
    """A contact sheet of cells, for a person to check them: each cell's box with a margin
    of half its size, outlined, brought to ``side`` px, in rows of ``columns``.

    Args:
        image: (H, W, 3) uint8.
        labels: (H, W) cells 1..N.
        cells: the labels to show, in order.
        side: px of each tile; columns: tiles per row.
        colour: RGB of the outline.

    Returns:
        (rows * side, min(columns, len(cells)) * side, 3) uint8 (white gaps of 2 px).
    """
    from PIL import Image
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    slices = ndimage.find_objects(labels)
    tiles = []
    for cell in cells:
        rows, cols = slices[cell - 1]
        margin = max(rows.stop - rows.start, cols.stop - cols.start) // 2
        r0, r1 = max(0, rows.start - margin), min(labels.shape[0], rows.stop + margin)
        c0, c1 = max(0, cols.start - margin), min(labels.shape[1], cols.stop + margin)
        crop = image[r0:r1, c0:c1].copy()
        crop[find_boundaries(labels[r0:r1, c0:c1] == cell, mode="inner")] = colour
        factor = side / max(crop.shape[:2])
        size = (max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor)))
        small = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
        tile = np.full((side, side, 3), 255, np.uint8)
        tile[:small.shape[0], :small.shape[1]] = small[:side, :side]
        tile[-2:], tile[:, -2:] = 255, 255
        tiles.append(tile)
    if not tiles:
        return np.full((side, side, 3), 255, np.uint8)
    columns = min(columns, len(tiles))
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    return np.concatenate([np.concatenate(tiles[i:i + columns], axis=1)
                           for i in range(0, len(tiles), columns)], axis=0)


def truth_scatter(true: list[float], predicted: list[float], path, xlabel: str, ylabel: str,
                  title: str) -> None:
    """One point per image, predicted against true, with the line where they are equal;
    saved to ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), constrained_layout=True)
    ax.scatter(true, predicted, s=25)
    top = max(list(true) + list(predicted) + [1]) * 1.05
    ax.plot([0, top], [0, top], "k:", label="predicted = true")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    save_figure(fig, path)
