"""A run's summary: one row per image, its columns and how its fields are written."""

from __future__ import annotations

SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = ("image", "width", "height", "cell_fraction", "cells", "complete_cells",
                   "diameter", "diameter_source", "seconds", "status")
"""``cells``: labelled cells (with ``cells``); ``complete_cells``: those not cut by the
image border, the count to compare between fields; ``diameter``: the cell diameter (px)
the image was segmented at, ``diameter_source`` whether it was ``given`` or the
``model``'s own. A row also carries ``files`` (kind -> file name of what was written),
which summary.csv leaves out."""


def diameter_fields(result) -> dict:
    """The summary fields of the cell diameter a :class:`Prediction` was made at."""
    return {"diameter": "" if result.diameter is None else f"{result.diameter:.1f}",
            "diameter_source": result.diameter_source}
