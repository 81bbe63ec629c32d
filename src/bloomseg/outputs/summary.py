"""A run's summary: one row per image, its columns and how its fields are written."""

from __future__ import annotations

from pathlib import Path

SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = ("image", "width", "height", "cell_fraction", "cells", "complete_cells",
                   "diameter", "diameter_source", "diameter_note", "seconds", "status")
"""``cells``: labelled cells (with ``cells``); ``complete_cells``: those not cut by the
image border, the count to compare between fields; ``diameter``: the cell diameter (px)
the image was segmented at, ``diameter_source`` whether it was ``given``,
``estimated`` or the ``model``'s own, ``diameter_note`` what to know about it (no cells
to estimate from, an estimate from few cells). A row also carries ``files`` (kind ->
file name of what was written), which summary.csv leaves out."""


CELL_DIAMETER_COLUMNS = {"diameter": "image_diameter", "diameter_source": "image_diameter_source"}
"""The cell table's columns that repeat its image's diameter fields, so that a table
read on its own says at which cell size its cells were found."""


def diameter_fields(result) -> dict:
    """The summary fields of the cell diameter a :class:`Prediction` was made at."""
    return {"diameter": "" if result.diameter is None else f"{result.diameter:.1f}",
            "diameter_source": result.diameter_source, "diameter_note": result.diameter_note}


def save_cell_table(path: Path, cells: list[dict], result) -> None:
    """Write an image's cell table: the columns of
    :func:`bloomseg.cells.measure.measure_cells`, then :data:`CELL_DIAMETER_COLUMNS` from
    the :class:`Prediction` ``result``."""
    from bloomseg.cells.measure import COLUMNS
    from bloomseg.files import save_csv

    fields = diameter_fields(result)
    extra = {column: fields[key] for key, column in CELL_DIAMETER_COLUMNS.items()}
    save_csv(path, [row | extra for row in cells], COLUMNS + tuple(extra))
