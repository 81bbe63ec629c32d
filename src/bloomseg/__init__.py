"""bloomseg: blood-smear cell segmentation on DinoBloom features.

The pipeline, in the order data flows: ``data`` (images, datasets, boxes) ->
``backbone`` (the frozen ViT) -> ``model`` (network, heads, inputs, model files) ->
``inference`` (whole images) -> ``cells`` (one label per cell, measurements, formats) ->
``quality`` (the verdict per image and per run) -> ``outputs`` (a run over many files, large
images, Dask, the report) ->
``evaluation``, ``train``, ``tools`` -> ``cli``. Importing it does not import torch."""

from __future__ import annotations

from bloomseg.errors import BloomsegError, DataError, ImageError, WeightsError
from bloomseg.lazy import lazy_exports

__version__ = "0.5.0"

_NAMES = {
    "load_backbone": "bloomseg.backbone",
    "Segmenter": "bloomseg.inference.segmenter",
    "read_image": "bloomseg.data.images",
    "judge": "bloomseg.quality",
    "judge_run": "bloomseg.quality",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = [
    "BloomsegError",
    "DataError",
    "ImageError",
    "Segmenter",
    "WeightsError",
    "__version__",
    "judge",
    "judge_run",
    "load_backbone",
    "read_image",
]
