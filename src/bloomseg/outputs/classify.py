"""Naming the cells of label images made elsewhere (cellpose, StarDist, QuPath, a hand
correction): the classifier's call on each cell as it is, written as ``predict --cells``
writes its cells, so a lab with its own segmenter gets bloomseg's classes, counts,
parasitemia, GeoJSON and report.

Each image's label image is found in the ``--labels`` folder by the image's stem
(:data:`LABEL_NAMES`: bloomseg's own, cellpose's and the plain forms), or is the
``--labels`` file itself for a single image. Cells keep their pixels: none is joined,
split or dropped; labels with gaps are numbered anew (in order), and the label image
written beside the other outputs holds those numbers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bloomseg.errors import BloomsegError, DataError
from bloomseg.outputs.run import (
    CELL_OUTPUTS,
    LABELS_END,
    finish_run,
    planned_row,
    record_path,
    write_cells,
    written_files,
)
from bloomseg.outputs.summary import SUMMARY_COLUMNS

LABEL_NAMES = (f"{{stem}}{LABELS_END}", "{stem}_cp_masks.tif", "{stem}_cp_masks.png",
               "{stem}_masks.tif", "{stem}_masks.png", "{stem}_labels.png", "{stem}.tif",
               "{stem}.tiff", "{stem}.png")
"""The names an image's label image may have in the labels folder, in the order looked
for: bloomseg's (``predict --cells``), cellpose's (``--save_tif``/``--save_png``), and
plain ones."""


def label_file(labels: str | Path, image: str | Path) -> Path:
    """The label image of an image.

    Args:
        labels: a label image (for one image) or a folder holding them.
        image: the image.

    Raises:
        DataError: none is found (naming where it was looked for).
    """
    labels, image = Path(labels), Path(image)
    if labels.is_file():
        return labels
    for name in LABEL_NAMES:
        found = labels / name.format(stem=image.stem)
        # a label image named like its image is never the image itself
        if found.is_file() and found.resolve() != image.resolve():
            return found
    raise DataError(f"{image}: no label image for it in {labels} (looked for "
                    f"{', '.join(n.format(stem=image.stem) for n in LABEL_NAMES)})")


def classify_image(segmenter, image_path: str | Path, labels: str | Path,
                   out_dir: str | Path, diameter: float | str | None = None) -> dict:
    """Name the cells of one image's label image and write its outputs (those of
    ``predict --cells``), replacing any there. Never raises for a bad file: the row says
    what went wrong.

    Args:
        segmenter: a :class:`bloomseg.inference.segmenter.Segmenter` with a classifier.
        image_path: the image (PNG, JPEG, TIFF, BMP).
        labels: its label image (integer TIFF or PNG, the image's size, 0 background), or
            the folder holding it (:func:`label_file`).
        out_dir: the output folder.
        diameter: px, or ``auto``/None: the cells' own size (see
            :meth:`~bloomseg.inference.segmenter.Segmenter.cells_scale`).

    Returns:
        The image's summary row; ``status`` is ``ok`` or ``failed: ...``.
    """
    from skimage.segmentation import relabel_sequential

    from bloomseg.data.images import read_image, read_labels
    from bloomseg.files import save_json
    from bloomseg.outputs.summary import diameter_fields

    image_path, out_dir = Path(image_path), Path(out_dir)
    row = dict.fromkeys(SUMMARY_COLUMNS, "") | {"image": str(image_path)}
    record = record_path(out_dir, image_path.stem)
    try:
        record.unlink(missing_ok=True)  # until every output is rewritten
        start = time.perf_counter()
        labels_path = label_file(labels, image_path)
        image = read_image(image_path)
        labels = read_labels(labels_path)
        if labels.shape != image.shape[:2]:
            raise DataError(f"{labels_path}: labels of {labels.shape[1]}x{labels.shape[0]} px "
                            f"for an image of {image.shape[1]}x{image.shape[0]} px "
                            f"({image_path})")
        if labels.min() < 0:
            raise DataError(f"{labels_path}: negative labels; cells must be 1..N, 0 background")
        labels = relabel_sequential(labels)[0].astype(np.int32)
        scale = segmenter.cells_scale(image, labels, diameter)
        types = segmenter.classes_of(image, labels, scale.diameter) if labels.any() else []
        diameter_row = diameter_fields(scale)
        row |= diameter_row | write_cells(image, labels, types, diameter_row, out_dir,
                                          image_path.stem)
        row |= {"width": image.shape[1], "height": image.shape[0],
                "cell_fraction": f"{(labels > 0).mean():.6f}",
                "seconds": f"{time.perf_counter() - start:.3f}"}
    except BloomsegError as e:
        return row | {"status": f"failed: {e}"}
    except (MemoryError, RuntimeError, ValueError, OSError) as e:
        return row | {"status": f"failed: {image_path}: {type(e).__name__}: {e}"}
    row["status"] = "ok"
    try:
        save_json(record, {"row": row, "large": False})
    except BloomsegError as e:
        return row | {"status": f"failed: {e}"}
    return row | {"files": written_files(out_dir, image_path.stem, CELL_OUTPUTS, False)}


def classify_files(segmenter, paths: list[Path], labels: str | Path, out_dir: str | Path,
                   diameter: float | str | None = None, overwrite: bool = False,
                   progress: bool = True) -> list[dict]:
    """Name the cells of many images' label images (:func:`classify_image`); write each
    image's outputs, summary.csv and report.html, as ``predict --cells`` does.

    Args:
        segmenter: a segmenter with a classifier.
        paths: the images.
        labels: their label images' folder, or one label image for one image.
        out_dir: the output folder.
        diameter: px or ``auto``/None (each image's cells' own size).
        overwrite: replace outputs that exist (else such images are skipped).
        progress: a progress bar.

    Returns:
        One summary row per image (``ok``, ``skipped: ...`` or ``failed: ...``).

    Raises:
        DataError: one label file given for several images.
    """
    from tqdm import tqdm

    from bloomseg.errors import ConfigError
    from bloomseg.inference.options import AUTO, IMAGE_DIAMETER, OWN

    if segmenter.classifier is None:
        raise ConfigError(f"classes: the model {segmenter.name} has no cell classifier (give "
                          "one with --classifier)")
    if diameter == OWN:
        raise ConfigError("diameter must be a number of px or auto: cells from a label image "
                          "are named at their own size, not the model's")
    IMAGE_DIAMETER.check("diameter", AUTO if diameter is None else diameter)
    if not Path(labels).exists():
        raise ConfigError(f"labels is not a label image or a folder of them: {labels}")
    if Path(labels).is_file() and len(paths) > 1:
        raise DataError(f"--labels {labels} is one file for {len(paths)} images: give the "
                        "folder that holds each image's label image")
    out_dir = Path(out_dir)
    rows = []
    for path in tqdm(paths, desc="naming cells", unit="image", disable=not progress):
        planned = planned_row(out_dir, path, CELL_OUTPUTS, overwrite, resume=False)
        if planned is not None:  # its outputs exist
            rows.append(planned)
            continue
        row = classify_image(segmenter, path, labels, out_dir, diameter)
        if progress and row["status"] != "ok":
            tqdm.write(f"skipped {row['status'].removeprefix('failed: ')}")
        rows.append(row)
    finish_run(out_dir, rows, CELL_OUTPUTS, segmenter.name)
    return rows
