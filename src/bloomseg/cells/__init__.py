"""Cells one by one: separation into labels, matching against truth, measurements, and the
formats other tools open (label TIFF, QuPath GeoJSON, COCO)."""

from __future__ import annotations

from bloomseg.lazy import lazy_exports

_NAMES = {
    "InstanceParams": "bloomseg.cells.instances",
    "separate": "bloomseg.cells.instances",
    "match_boxes": "bloomseg.cells.matching",
    "match_masks": "bloomseg.cells.matching",
    "measure_cells": "bloomseg.cells.measure",
    "save_labels": "bloomseg.cells.formats",
    "geojson_features": "bloomseg.cells.formats",
    "coco_dataset": "bloomseg.cells.formats",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = [
    "InstanceParams",
    "coco_dataset",
    "geojson_features",
    "match_boxes",
    "match_masks",
    "measure_cells",
    "save_labels",
    "separate",
]
