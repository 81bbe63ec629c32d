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
    padded = np.pad(mask, 1, mode="edge")
    inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~inner


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


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.25) -> np.ndarray:
    """The image with each cell tinted and outlined in its own colour, so touching cells
    show where they part.

    Args:
        image: (H, W, 3) uint8.
        labels: (H, W) integer cells 1..N, 0 background.

    Returns:
        (H, W, 3) uint8.
    """
    from skimage.segmentation import find_boundaries

    colours = label_colours(int(labels.max(initial=0)))[labels].astype(np.float32)
    cells = labels > 0
    out = image.astype(np.float32)
    out[cells] = (1 - alpha) * out[cells] + alpha * colours[cells]
    edges = find_boundaries(labels, mode="inner") & cells
    out[edges] = colours[edges]
    return out.round().astype(np.uint8)
