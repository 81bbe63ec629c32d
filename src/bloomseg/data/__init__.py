"""Reading what bloomseg is given: images of any size and format, dataset folders with
masks and boxes, and synthetic smears."""

from __future__ import annotations

from bloomseg.lazy import lazy_exports

_NAMES = {
    "read_image": "bloomseg.data.images",
    "read_labels": "bloomseg.data.images",
    "LazyImage": "bloomseg.data.images",
    "expand_inputs": "bloomseg.data.images",
    "scan_split": "bloomseg.data.dataset",
    "load_sample": "bloomseg.data.dataset",
    "read_boxes": "bloomseg.data.boxes",
    "write_dataset": "bloomseg.data.synthetic",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = [
    "LazyImage",
    "expand_inputs",
    "load_sample",
    "read_boxes",
    "read_image",
    "read_labels",
    "scan_split",
    "write_dataset",
]
