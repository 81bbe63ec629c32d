"""Whole images through a model: options, logits of any size, stitched features, and the
``Segmenter`` that turns them into masks and cells."""

from __future__ import annotations

from bloomseg.lazy import lazy_exports

_NAMES = {
    "InferenceOptions": "bloomseg.inference.options",
    "SegmenterSpec": "bloomseg.inference.options",
    "predict_logits": "bloomseg.inference.logits",
    "stitched_features": "bloomseg.inference.stitch",
    "Segmenter": "bloomseg.inference.segmenter",
    "Prediction": "bloomseg.inference.segmenter",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = [
    "InferenceOptions",
    "Prediction",
    "Segmenter",
    "SegmenterSpec",
    "predict_logits",
    "stitched_features",
]
