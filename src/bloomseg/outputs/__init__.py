"""Writing a run's outputs: one image's files, many images, large images block by block,
a Dask cluster, and the HTML report."""

from __future__ import annotations

from bloomseg.lazy import lazy_exports

_NAMES = {
    "OutputOptions": "bloomseg.outputs.options",
    "segment_image": "bloomseg.outputs.run",
    "segment_files": "bloomseg.outputs.run",
    "segment_large": "bloomseg.outputs.large",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = [
    "OutputOptions",
    "segment_files",
    "segment_image",
    "segment_large",
]
