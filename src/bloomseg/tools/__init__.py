"""Tools around the pipeline: exploring a dataset, backbone features and their PCA
pictures, and the installation doctor."""

from __future__ import annotations

from bloomseg.lazy import lazy_exports

_NAMES = {
    "explore": "bloomseg.tools.explore",
    "extract_features": "bloomseg.tools.features",
    "findings": "bloomseg.tools.doctor",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = [
    "explore",
    "extract_features",
    "findings",
]
