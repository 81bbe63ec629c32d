"""Training augmentation: colour (stain) jitter, and what differs between microscopes.

The flips and rotations are the numbered dihedral variants of :mod:`bloomseg.model.inputs`,
so a feature cache can store each variant of a tile under its number and a label map can
be moved with its image.

:class:`Microscope` draws, per example, how another microscope, stain and camera could
have shown the same cells: contrast, gamma, saturation, stain colour (in optical density,
on the haematoxylin/eosin/DAB axes), background tint, uneven illumination, defocus blur,
sensor noise, JPEG compression and cell size. Each is one name in
:data:`AUGMENTATIONS` and can be switched off; a run records the ones it used.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

AUGMENTATIONS = ("contrast", "gamma", "saturation", "stain", "tint", "illumination", "blur",
                 "noise", "jpeg", "scale")
"""Every microscope augmentation, in the order they are applied (scale is applied to the
view, before the others)."""
PIXELWISE = ("contrast", "gamma", "saturation", "stain", "tint")
"""The ones that change each pixel by its own value alone: a view and the whole image
they are drawn for change alike, so the image's levels can be measured on the whole."""

RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]],
                        dtype=np.float32)
"""Optical density of haematoxylin, eosin and DAB in RGB (Ruifrok & Johnston 2001); the
Romanowsky stains of blood smears lie on the first two."""
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)


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


@dataclass(frozen=True)
class Microscope:
    """Draws and applies the microscope augmentations named in ``names``.

    Strengths (each drawn per example): contrast x0.3 to x1.5 about the image's mean
    grey; gamma 0.6 to 1.7; saturation 0 (grey) to 1.3 on half the examples; each stain
    amount x0.7 to x1.3 and shifted by up to 0.05 optical density; the background tinted
    by a factor 0.85 to 1.05 per channel; illumination falling by up to 30% across the
    view or to its corners; blur of sigma 0.5 to 2.5 px, noise of sigma up to 0.04 and
    JPEG quality 25 to 90, each on half the examples (JPEG on a third); cells
    1/``scale_range`` to ``scale_range`` times their size (log-uniform).
    """

    names: tuple[str, ...] = AUGMENTATIONS
    scale_range: float = 1.25

    def __post_init__(self) -> None:
        unknown = sorted(set(self.names) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"unknown augmentations {unknown}; choose from "
                             f"{', '.join(AUGMENTATIONS)}")

    def draw(self, rng: np.random.Generator, grey: float) -> dict:
        """One example's strengths (absent: that augmentation is off or not drawn).

        Args:
            rng: the example's generator.
            grey: the mean grey (0..1) of the whole image: the contrast's pivot.
        """
        on, draws = set(self.names), {}
        if "contrast" in on:
            draws["contrast"] = (float(np.exp(rng.uniform(np.log(0.3), np.log(1.5)))), grey)
        if "gamma" in on:
            draws["gamma"] = float(np.exp(rng.uniform(np.log(0.6), np.log(1.7))))
        if "saturation" in on and rng.random() < 0.5:
            draws["saturation"] = float(rng.uniform(0, 1.3))
        if "stain" in on:
            draws["stain"] = (rng.uniform(0.7, 1.3, 3).astype(np.float32),
                              rng.uniform(-0.05, 0.05, 3).astype(np.float32))
        if "tint" in on:
            draws["tint"] = rng.uniform(0.85, 1.05, 3).astype(np.float32)
        if "illumination" in on:
            draws["illumination"] = (rng.uniform(-0.3, 0.3, 2), float(rng.uniform(0, 0.3)))
        if "blur" in on and rng.random() < 0.5:
            draws["blur"] = float(rng.uniform(0.5, 2.5))
        if "noise" in on and rng.random() < 0.5:
            draws["noise"] = (float(rng.uniform(0, 0.04)), int(rng.integers(2**31)))
        if "jpeg" in on and rng.random() < 1 / 3:
            draws["jpeg"] = int(rng.integers(25, 91))
        if "scale" in on:
            reach = np.log(self.scale_range)
            draws["scale"] = float(np.exp(rng.uniform(-reach, reach)))
        return draws

    @staticmethod
    def pixelwise(image: np.ndarray, draws: dict) -> np.ndarray:
        """The :data:`PIXELWISE` augmentations of ``draws``: (H, W, 3) uint8 -> uint8."""
        x = image.astype(np.float32) / 255.0
        if "stain" in draws:  # optical density, unmixed into stains, changed, mixed back
            scale, shift = draws["stain"]
            density = -np.log(np.clip(x, 1 / 255, 1))
            stains = density @ HED_FROM_RGB
            x = np.exp(-np.maximum((stains * scale + shift) @ RGB_FROM_HED, 0))
        if "tint" in draws:
            x = x * draws["tint"]
        if "saturation" in draws:
            grey = _grey(x)[..., None]
            x = grey + (x - grey) * draws["saturation"]
        if "contrast" in draws:
            factor, pivot = draws["contrast"]
            x = pivot + (x - pivot) * factor
        if "gamma" in draws:
            x = np.clip(x, 0, 1) ** draws["gamma"]
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)

    @staticmethod
    def optics(image: np.ndarray, draws: dict) -> np.ndarray:
        """The rest (illumination, blur, noise, JPEG) on a view: (H, W, 3) uint8 -> uint8."""
        x = image.astype(np.float32) / 255.0
        if "illumination" in draws:
            (gy, gx), vignette = draws["illumination"]
            h, w = x.shape[:2]
            yy, xx = np.meshgrid(np.linspace(-0.5, 0.5, h), np.linspace(-0.5, 0.5, w),
                                 indexing="ij")
            field = 1 + gy * yy + gx * xx - vignette * 2 * (yy ** 2 + xx ** 2)
            x = x * field[..., None].astype(np.float32)
        if "blur" in draws:
            from scipy import ndimage

            x = ndimage.gaussian_filter(x, (draws["blur"], draws["blur"], 0))
        if "noise" in draws:
            sigma, seed = draws["noise"]
            x = x + np.random.default_rng(seed).normal(0, sigma, x.shape).astype(np.float32)
        out = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
        if "jpeg" in draws:
            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(out).save(buffer, "JPEG", quality=draws["jpeg"])
            out = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        return out
