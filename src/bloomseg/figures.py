"""Pictures people look at: mask overlays, error maps, and saving matplotlib figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloomseg.io import atomic_output


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
