"""The plugin's reader: a bloomseg output folder, or one ``<stem>_labels.tif``, opened as
the image (where it is found) and its cells with their table."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from bloomseg.data.images import IMAGE_SUFFIXES
from bloomseg.outputs.options import OutputOptions
from bloomseg.outputs.run import LABELS_END, output_paths, read_record
from bloomseg.outputs.summary import SUMMARY_FILE
from bloomseg.viewer.layers import META, SET, labels_layer, table_classes, table_diameter


def label_files(path: str | Path) -> list[Path]:
    """The label images a path holds: itself where it is one, else a folder's, sorted."""
    path = Path(path)
    if path.is_dir():
        return sorted(path.glob(f"*{LABELS_END}"))
    return [path] if path.name.endswith(LABELS_END) and path.is_file() else []


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[tuple]] | None:
    """npe2 reader hook: :func:`read_outputs` where ``path`` holds bloomseg labels, else
    None (another reader may take it)."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    return read_outputs if paths and all(label_files(p) for p in paths) else None


def _recorded_image(folder: Path, stem: str) -> str | None:
    """The image path a predict run recorded for ``stem`` (its record, else summary.csv)."""
    record = read_record(folder, stem)
    if record is not None and record["row"].get("image"):
        return str(record["row"]["image"])
    try:
        with open(folder / SUMMARY_FILE, encoding="utf-8", newline="") as f:
            return next((r["image"] for r in csv.DictReader(f)
                         if Path(r.get("image", "")).stem == stem), None)
    except OSError:
        return None


def find_image(folder: Path, stem: str) -> Path | None:
    """The image a label file was made from: ``<stem>.<image suffix>`` beside it, else
    the path its run recorded (as given, or relative to the output folder)."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.exists():
                return candidate
    recorded = _recorded_image(folder, stem)
    if recorded:
        for candidate in (Path(recorded), folder / recorded):
            if candidate.exists():
                return candidate
    return None


def read_cells(labels_file: Path) -> list[tuple]:
    """An output's layers: the image (where :func:`find_image` finds it) and its cells,
    the layer's features being ``<stem>_cells.csv``.

    Raises:
        BloomsegError: the label image cannot be read (naming it).
    """
    import pandas as pd

    from bloomseg.data.images import read_image, read_labels

    folder, stem = labels_file.parent, labels_file.name[: -len(LABELS_END)]
    labels = read_labels(labels_file)
    table = output_paths(folder, stem, OutputOptions(cells=True))["cells"]
    features = pd.read_csv(table, keep_default_na=False) if table.is_file() else \
        pd.DataFrame({"id": sorted(set(labels[labels > 0].ravel().tolist()))})
    layers = []
    image = find_image(folder, stem)
    if image is not None:
        layers.append((read_image(image, None), {"name": stem, "rgb": True}, "image"))
    data, settings, kind = labels_layer(labels, stem, features, table_diameter(features))
    # the saved classes are what the user said: Save keeps them (bloomseg.viewer.naming)
    settings["metadata"][META][SET] = table_classes(features)
    layers.append((data, settings, kind))
    return layers


def read_outputs(path: str | list[str]) -> list[tuple]:
    """Every image's layers under ``path`` (:func:`read_cells` of each label file)."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    return [layer for p in paths for f in label_files(p) for layer in read_cells(f)]
