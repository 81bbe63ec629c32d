"""Training augmentation: colour (stain) jitter. The flips and rotations are the numbered
dihedral variants of :mod:`bloomseg.model.inputs`, so a feature cache can store each
variant of a tile under its number and a label map can be moved with its image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ColourJitter:
    """Random brightness, contrast, saturation and hue changes of an RGB uint8 image.

    Each strength s draws a factor in [1 - s, 1 + s] (hue: a shift in [-s, s] turns of
    the colour wheel); 0 switches that change off. Stain colour varies between labs and
    batches; the jitter keeps a model from learning one lab's purple.
    """

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.03

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) uint8 -> jittered (H, W, 3) uint8."""
        x = image.astype(np.float32) / 255.0
        if self.brightness:
            x = x * rng.uniform(1 - self.brightness, 1 + self.brightness)
        if self.contrast:
            mean = _grey(x).mean()
            x = (x - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        if self.saturation:
            grey = _grey(x)[..., None]
            x = (x - grey) * rng.uniform(1 - self.saturation, 1 + self.saturation) + grey
        if self.hue:
            x = _rotate_hue(x, rng.uniform(-self.hue, self.hue))
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def _grey(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _rotate_hue(x: np.ndarray, turns: float) -> np.ndarray:
    """Rotate colours about the grey axis by ``turns`` of a full circle (YIQ rotation)."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                      dtype=np.float32)
    angle = 2 * np.pi * turns
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float32)
    m = np.linalg.inv(to_yiq) @ rot @ to_yiq
    return x @ m.T.astype(np.float32)
