"""Scoring a model on a labelled split: pixel counts and scores, cell matches, files and
plots."""

from __future__ import annotations

from bloomseg.lazy import lazy_exports

_NAMES = {
    "evaluate": "bloomseg.evaluation.evaluate",
    "PixelCounts": "bloomseg.evaluation.pixels",
    "pixel_scores": "bloomseg.evaluation.pixels",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = [
    "PixelCounts",
    "evaluate",
    "pixel_scores",
]
