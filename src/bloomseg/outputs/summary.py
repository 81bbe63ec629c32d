"""A run's summary: one row per image, its columns and how its fields are written."""

from __future__ import annotations

from pathlib import Path

from bloomseg.cells.types import TYPE_COLUMNS, parasitemia, type_counts
from bloomseg.data.vocabulary import KINDS

SUMMARY_FILE = "summary.csv"
CLASS_COLUMNS = KINDS + ("uncertain", "infected_uncertain", "parasitemia_percent",
                         "parasitemia_low", "parasitemia_high", "parasitemia_certain_percent")
"""Cells of each class, those whose class is uncertain (of them, those called infected)
and the parasitemia (infected per 100 red cells, with its 95% Wilson interval), and the
parasitemia without the uncertain infected calls (counted as red cells): the range the
uncertain calls span, where a classifier named the cells."""
SUMMARY_COLUMNS = ("image", "width", "height", "cell_fraction", "cells", "complete_cells",
                   *CLASS_COLUMNS, "diameter", "diameter_source", "diameter_note", "seconds",
                   "qc", "qc_reasons", "status")
TOTAL = "(all images)"
"""The ``image`` of summary.csv's last row where cells were classified: the run's counts
and its parasitemia over every image's red cells."""
"""``cells``: labelled cells (with ``cells``); ``complete_cells``: those not cut by the
image border, the count to compare between fields; ``diameter``: the cell diameter (px)
the image was segmented at, ``diameter_source`` whether it was ``given``,
``estimated`` or the ``model``'s own, ``diameter_note`` what to know about it (no cells
to estimate from, an estimate from few cells); ``qc`` the quality verdict, ``ok`` or
``check`` (:func:`bloomseg.quality.judge`; '' where the image was not judged: without
cells, or a large image), ``qc_reasons`` its reasons' names, separated by ``;``. A row
also carries ``files`` (kind -> file name of what was written), which summary.csv leaves
out."""


CELL_DIAMETER_COLUMNS = {"diameter": "image_diameter", "diameter_source": "image_diameter_source"}
"""The cell table's columns that repeat its image's diameter fields, so that a table
read on its own says at which cell size its cells were found."""


def diameter_fields(scale) -> dict:
    """The summary fields of the cell diameter an image was segmented or named at.

    Args:
        scale: a :class:`bloomseg.inference.scale.Scale` (a prediction's ``scale``).
    """
    return {"diameter": "" if scale.diameter is None else f"{scale.diameter:.1f}",
            "diameter_source": scale.source, "diameter_note": scale.note}


def cell_table(cells: list[dict], diameter: dict, named: bool) -> tuple[list[dict], tuple[str, ...]]:
    """An image's cell table, as written and as a viewer shows it: the columns of
    :func:`bloomseg.cells.measure.measure_cells`, the class columns where the cells were
    ``named`` (the rows then hold them), then :data:`CELL_DIAMETER_COLUMNS` from the
    image's :func:`diameter_fields` ``diameter``.

    Returns:
        (rows, columns).
    """
    from bloomseg.cells.measure import COLUMNS

    extra = {column: diameter[key] for key, column in CELL_DIAMETER_COLUMNS.items()}
    return ([row | extra for row in cells],
            COLUMNS + (TYPE_COLUMNS if named else ()) + tuple(extra))


def save_cell_table(path: Path, cells: list[dict], diameter: dict, named: bool) -> None:
    """Write an image's :func:`cell_table`."""
    from bloomseg.files import save_csv

    save_csv(path, *cell_table(cells, diameter, named))


def class_fields(types: list[dict] | None) -> dict:
    """An image's summary fields of its cells' classes (none where they were not named)."""
    if types is None:
        return {}
    counts = type_counts([t["class"] for t in types]) | uncertain_counts(types)
    return counts | parasitemias(counts)


def uncertain_counts(types: list[dict]) -> dict[str, int]:
    """The cells whose class is uncertain, and those of them called infected."""
    doubtful = [t for t in types if t.get("uncertain")]
    return {"uncertain": len(doubtful),
            "infected_uncertain": sum(t["class"] == "infected" for t in doubtful)}


def parasitemias(counts: dict) -> dict:
    """The parasitemia of counts (:data:`CLASS_COLUMNS`' cell counts) with its interval,
    and ``parasitemia_certain_percent``: the uncertain infected calls counted as red
    cells ('' where there are no red cells)."""
    infected, red = int(counts["infected"]), int(counts["red_blood_cell"])
    doubtful = int(counts.get("infected_uncertain") or 0)
    certain = round(100 * (infected - doubtful) / (infected + red), 3) if infected + red else ""
    return parasitemia(infected, red) | {"parasitemia_certain_percent": certain}


def qc_fields(verdict, profile=None) -> dict:
    """The summary fields of an image's quality verdict (a :class:`bloomseg.quality.Verdict`),
    and what the run's verdict needs of it (not columns of summary.csv; kept in the
    image's record so that a resumed run judges it again): ``qc_signals``, its signals,
    and ``red_profile``, its red cells' profile (``profile``: a prediction's
    ``red_profile``, or None)."""
    return {"qc": verdict.status, "qc_reasons": ";".join(verdict.reasons),
            "qc_signals": {k: round(float(v), 6) for k, v in verdict.signals.items()},
            "red_profile": None if profile is None else [round(float(v), 5) for v in profile]}


def run_verdict(rows: list[dict], classifier):
    """The run's verdict (:class:`bloomseg.quality.run.RunVerdict`) from its judged rows
    (:func:`qc_fields`), or None where no image's cells were named.

    Args:
        rows: summary rows; classifier: the run's cell classifier (None: no classes).
    """
    import numpy as np

    from bloomseg.quality.run import run_status

    judged = _judged(rows)
    if classifier is None or not any(r.get("infected", "") != "" for r in judged):
        return None
    return run_status([None if r.get("red_profile") is None else np.asarray(r["red_profile"])
                       for r in judged], classifier.lab_centres.numpy(),
                      classifier.lab_scatter.numpy())


def judge_rows(rows: list[dict], run):
    """Each judged row's ``qc`` and ``qc_reasons`` seen beside the run's other images
    (:func:`bloomseg.quality.run.in_run`), in place.

    Args:
        rows: summary rows; run: the run's verdict (:func:`run_verdict`; None: no
            classes, the images are still compared with each other).

    Returns:
        The run's verdict with what it summarised (None where ``run`` is None).
    """
    from bloomseg.quality import verdict_of
    from bloomseg.quality.run import RunVerdict, in_run

    judged = _judged(rows)
    verdicts, seen = in_run([verdict_of(r["qc_signals"]) for r in judged], run or RunVerdict(""))
    for r, v in zip(judged, verdicts):
        r.update({"qc": v.status, "qc_reasons": ";".join(v.reasons)})
    return None if run is None else seen


def _judged(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and r.get("qc_signals")]


def total_row(rows: list[dict], strict: bool = False, run=None) -> dict | None:
    """The run's :data:`TOTAL` row: cells of each class summed over the images whose
    cells were classified, and the parasitemia of all their red cells (None where no
    image's cells were). ``strict`` leaves out the images whose verdict is ``check``.
    ``run`` (a :class:`bloomseg.quality.run.RunVerdict`) gives its ``qc`` and
    ``qc_reasons``."""
    named = [r for r in rows if r.get("status") == "ok" and r.get("infected", "") != ""
             and not (strict and r.get("qc") == "check")]
    if not named:
        return None
    left_out = sum(r.get("status") == "ok" and r.get("qc") == "check" for r in rows) \
        if strict else 0
    counts = {k: sum(int(r[k] or 0) for r in named)
              for k in KINDS + ("uncertain", "infected_uncertain")}
    return (dict.fromkeys(SUMMARY_COLUMNS, "") | {"image": TOTAL, "cells": sum(
        int(r["cells"]) for r in named), "status": f"total of {len(named)} images" + (
            f" ({left_out} to check left out: --qc-strict)" if left_out else "")}
            | counts | parasitemias(counts)
            | ({"qc": run.status, "qc_reasons": ";".join(run.reasons)} if run else {}))
