"""What the plugin shows of an image's cells, as plain layer data: the labels, the cell
table the command line writes as the layer's ``features``, colours by class, and the
counts in words. No napari import: the reader, the widget and ``bloomseg view`` share it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloomseg.cells.types import COLOURS, parasitemia, type_counts
from bloomseg.data.images import IMAGE_SUFFIXES
from bloomseg.data.vocabulary import KINDS

LAYER_SUFFIX = " cells"
"""A cells layer is named for its image: ``<image> cells``."""
META = "bloomseg"
"""The key of a cells layer's ``metadata`` that holds what Save needs: ``image`` (the
image layer's name) and ``diameter`` (its diameter fields)."""
SET = "set_classes"
"""The key of a cells layer's metadata (:data:`~bloomseg.viewer.layers.META`) that holds
the classes set by hand: {cell: (class, stage)}; a layer read from saved outputs starts
with its table's (what was saved is what the user said)."""




def labels_name(image_name: str) -> str:
    """The name of the cells layer of an image layer."""
    return f"{image_name}{LAYER_SUFFIX}"


def class_colormap(ids, classes) -> dict:
    """Colours of the cells by class (:data:`bloomseg.cells.types.COLOURS`): {label: RGBA
    in 0..1}, background transparent, for a Labels layer's ``colormap``."""
    colours: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for cell, kind in zip(ids, classes):
        r, g, b = COLOURS[kind]
        colours[int(cell)] = (r / 255, g / 255, b / 255, 1.0)
    return colours


def labels_layer(labels: np.ndarray, image_name: str, features, diameter: dict
                 ) -> tuple[np.ndarray, dict, str]:
    """A cells layer as napari layer data.

    Args:
        labels: (H, W) cells 1..N.
        image_name: the image layer's name.
        features: the cell table (:func:`bloomseg.outputs.summary.cell_table`) as a pandas
            DataFrame, one row per cell in label order; with a ``class`` column the cells
            are coloured by class.
        diameter: the image's diameter fields, kept for Save.

    Returns:
        (labels, layer settings, "labels").
    """
    settings = {"name": labels_name(image_name), "features": features, "opacity": 0.6,
                "metadata": {META: {"image": image_name, "diameter": dict(diameter)}}}
    if "class" in features.columns:
        settings["colormap"] = class_colormap(features["id"], features["class"])
    return labels, settings, "labels"


def table_classes(features) -> dict:
    """{cell: (class, stage)} of a cell table's named rows."""
    if "class" not in features.columns or "id" not in features.columns:
        return {}
    stages = features["stage"] if "stage" in features.columns else [""] * len(features)
    return {int(i): (str(k), str(s or "")) for i, k, s in zip(features["id"], features["class"],
                                                               stages) if k in KINDS}


def table_diameter(features) -> dict:
    """The image's diameter fields as its cell table repeats them (empty where it has
    no cells)."""
    from bloomseg.outputs.summary import CELL_DIAMETER_COLUMNS

    fields = {"diameter": "", "diameter_source": "", "diameter_note": ""}
    for key, column in CELL_DIAMETER_COLUMNS.items():
        if column in features.columns and len(features):
            fields[key] = str(features[column].iloc[0])
    return fields


def table_frame(rows: list[dict], columns: tuple[str, ...]):
    """The cell table as a pandas DataFrame, columns in the written order."""
    import pandas as pd

    return pd.DataFrame([{c: r.get(c, "") for c in columns} for r in rows], columns=list(columns))


def counts_text(features) -> str:
    """The counts of an image's cells (its cell table, a DataFrame) in words: how many,
    of each class and the parasitemia with its 95% interval where they were named."""
    cut = features["touches_border"].astype(str).str.lower().isin(("true", "1")).sum() \
        if len(features) else 0
    text = f"{len(features)} cells ({len(features) - cut} not cut by the border)"
    if "class" not in features.columns:
        return text
    counts = type_counts(list(features["class"]))
    words = ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in KINDS)
    p = parasitemia(counts["infected"], counts["red_blood_cell"])
    if p["parasitemia_percent"] == "":
        return f"{text}\n{words}\nparasitemia: no red cells"
    return (f"{text}\n{words}\nparasitemia {p['parasitemia_percent']}% "
            f"(95% CI {p['parasitemia_low']}–{p['parasitemia_high']}%)")


def image_stem(image_name: str) -> str:
    """The file stem outputs of an image layer are named by (its name, without a file
    suffix napari may have kept)."""
    name = Path(image_name).name
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES + (".zarr",) else name
