"""A user's corrected cell classes, and the classifier adapted to them.

napari's Save (and ``bloomseg predict --cells``) writes ``<stem>_cells.csv`` beside
``<stem>_labels.tif``: each row names a cell (``id``, its label) and what it is
(``class``, and ``stage`` for an infected cell). Adapting takes every row as what the
user says the cell is; a label with no row, or a row with no class, keeps the model's
call and teaches nothing.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bloomseg.data.dataset import is_flat, scan_split
from bloomseg.data.vocabulary import CLASSES, KINDS, STAGES, kind_of
from bloomseg.errors import ConfigError, DataError
from bloomseg.train.classifier import (
    ThresholdCheck,
    Windows,
    adapt_classifier,
    memory_scores,
    probabilities,
    recheck_threshold,
)

CELLS_END = "_cells.csv"
"""The cell table beside ``<stem>_labels.tif``."""
NOT_SAID = -1
"""The class of a label its table says nothing of."""
CLASSIFIER_FILE = "classifier.pt"
"""The adapted classifier in the run folder."""


@dataclass(frozen=True)
class CorrectedField:
    """An image, its cells and the table that names them."""

    image: Path
    labels: Path
    cells: Path


def corrected_fields(folder: str | Path) -> list[CorrectedField]:
    """Every image of a flat folder (images beside their ``<stem>_labels.tif``) whose
    ``<stem>_cells.csv`` has a ``class`` column; none in any other folder."""
    folder = Path(folder)
    if not is_flat(folder):
        return []
    found = []
    for s in scan_split(folder, "train", need_mask=False).samples:
        table = folder / f"{s.stem}{CELLS_END}"
        if table.is_file():
            with open(table, newline="", encoding="utf-8") as f:
                if "class" in (csv.DictReader(f).fieldnames or []):
                    found.append(CorrectedField(s.image, s.labels, table))
    return found


def said_classes(path: Path, count: int) -> tuple[np.ndarray, float | None]:
    """What a cell table says each cell is, and the diameter its cells were found at.

    Args:
        path: ``<stem>_cells.csv``; count: the labels' largest id.

    Returns:
        ((count,) the :data:`~bloomseg.data.vocabulary.CLASSES` index of each label
        1..count, :data:`NOT_SAID` where its row is missing or names no class; the
        ``image_diameter`` column's px, None where absent).

    Raises:
        DataError: an id that is not a label, or a class or stage bloomseg does not
            know, naming the file and line.
    """
    said = np.full(count, NOT_SAID, np.int64)
    diameter = None
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            kind, stage = (row.get("class") or "").strip(), (row.get("stage") or "").strip()
            try:
                cell = int(row.get("id", ""))
            except ValueError:
                raise DataError(f"{path}, line {line}: id {row.get('id')!r} is not a cell "
                                "number") from None
            if not 1 <= cell <= count:
                raise DataError(f"{path}, line {line}: cell {cell} is not in its label image "
                                f"(cells 1..{count})")
            try:
                diameter = float(row.get("image_diameter") or "") if diameter is None else diameter
            except ValueError:
                pass
            if not kind:
                continue
            if kind not in KINDS:
                raise DataError(f"{path}, line {line}: class {kind!r} is not one of "
                                f"{', '.join(KINDS)}")
            if kind == "infected" and stage not in STAGES:
                raise DataError(f"{path}, line {line}: an infected cell needs its stage "
                                f"({', '.join(STAGES)}), not {stage!r}")
            said[cell - 1] = CLASSES.index(stage if kind == "infected" else kind)
    return said, diameter


def field_cells(segmenter, field: CorrectedField, index: int) -> Windows:
    """The classifier's windows of the cells a field's table names, ``y`` what it says.

    Args:
        segmenter: a :class:`~bloomseg.inference.segmenter.Segmenter` with a classifier
            (its normalisation and cell size bring the cells to the classifier as
            ``predict`` does).
        field: the image, labels and table; index: the field's number in ``field``.

    Raises:
        ImageError, DataError: an unreadable image or labels, or labels of another size.
    """
    from bloomseg.data.images import read_image, read_labels
    from bloomseg.model.classifier import field_windows
    from bloomseg.model.inputs import normalise

    image, labels = read_image(field.image), read_labels(field.labels)
    if labels.shape != image.shape[:2]:
        raise DataError(f"{field.labels}: {labels.shape[1]}x{labels.shape[0]}, but its image "
                        f"{field.image.name} is {image.shape[1]}x{image.shape[0]}")
    said, diameter = said_classes(field.cells, int(labels.max()))
    size = segmenter.cells_scale(image, labels, diameter).diameter or segmenter.cell_diameter
    config = segmenter.classifier.config
    windows, reference = field_windows(config, normalise(image, segmenter.normalise, None),
                                       labels, size)
    kept = said != NOT_SAID
    n = int(kept.sum())
    return Windows(windows[kept], said[kept], np.ones((n, len(CLASSES)), bool),
                   np.zeros(n, int), np.zeros(n, int), np.repeat(reference[None], n, axis=0),
                   np.full(n, index))


@dataclass
class ClassesAdapted:
    """A classifier adapted to corrected cells (what its model card says).

    Attributes:
        classifier: the adapted classifier's file.
        fields: the images learnt from (file names); cells: cells named there.
        corrected: ``"called -> said"``: how many cells of each change the user made
            to the start classifier's calls.
        agreement_before, agreement_after: the share of the user's cells the classifier
            calls what the user says, before and after.
        check: the infected threshold checked again.
        memory_before, memory_after: per training lab of the classifier's memory, by
            name, the validation cells' figures
            (:func:`~bloomseg.train.classifier.memory_scores`; empty without a memory).
        seconds: how long it took.
    """

    classifier: Path
    fields: list[str]
    cells: int
    corrected: dict[str, int]
    agreement_before: float
    agreement_after: float
    check: ThresholdCheck
    memory_before: dict
    memory_after: dict
    seconds: float


def _kinds(model, cells: Windows) -> np.ndarray:
    from bloomseg.cells.types import cell_types

    p = probabilities(model, cells, model.config.temperature)
    return np.array([t["class"] for t in cell_types(p, model.config.infected_threshold)])


def adapt_classes(init: str | Path, folders: list[str | Path], run: str | Path,
                  log: Callable[[str], None] = print,
                  required: bool = True) -> ClassesAdapted | None:
    """Adapt the classifier of ``init`` to the classes named in ``folders``' cell
    tables (:func:`~bloomseg.train.classifier.adapt_classifier`, the threshold checked
    again by :func:`~bloomseg.train.classifier.recheck_threshold`) and write it to
    ``run/classifier.pt``.

    Args:
        init: the start model (``default``, a model folder) with a classifier.
        folders: images, ``<stem>_labels.tif`` and ``<stem>_cells.csv``.
        run: the run folder.
        log: told of each step.
        required: a start model without a classifier is an error (else it is logged,
            and nothing is done: ``train --adapt`` still adapts the segmentation).

    Returns:
        What was done, or None where no table there names classes.

    Raises:
        ConfigError: the model has no classifier (``required``). DataError: no cell named.
    """
    from bloomseg.inference.segmenter import Segmenter
    from bloomseg.model.files import save_classifier

    fields = [f for folder in folders for f in corrected_fields(folder)]
    if not fields:
        return None
    began = time.perf_counter()
    segmenter = Segmenter.load(init)
    if segmenter.classifier is None:
        if not required:
            log(f"classes: {init} has no cell classifier: the classes the tables name are not "
                "learnt")
            return None
        raise ConfigError(f"{init}: the model has no cell classifier to adapt the classes of")
    model = segmenter.classifier
    cells = Windows.join([field_cells(segmenter, f, i) for i, f in enumerate(fields)],
                         model.config.crop)
    if not len(cells):
        raise DataError(f"{', '.join(map(str, folders))}: the cell tables name no cell's class")
    said = np.array([kind_of(int(c)) for c in cells.y])
    before = _kinds(model, cells)
    def by_lab() -> dict[str, dict]:
        names = model.config.lab_names
        return {names[d] if d < len(names) else f"lab {d + 1}": v
                for d, v in memory_scores(model).items()}

    memory_before = by_lab()
    log(f"classes: {len(cells)} named cells of {len(fields)} image(s); the start classifier "
        f"calls {np.mean(before == said):.1%} of them as named")
    adapt_classifier(model, cells)
    check = recheck_threshold(model, cells)
    model.config = replace(model.config, infected_threshold=check.threshold)
    after = _kinds(model, cells)
    corrected: dict[str, int] = {}
    for a, b in zip(before, said):
        if a != b:
            corrected[f"{a} -> {b}"] = corrected.get(f"{a} -> {b}", 0) + 1
    path = Path(run) / CLASSIFIER_FILE
    save_classifier(path, model, {"config": model.config.as_dict(),
                                  "adapted": {"fields": len(fields), "cells": len(cells),
                                              "corrected": corrected}})
    done = ClassesAdapted(path, [f.image.name for f in fields], len(cells), corrected,
                          float(np.mean(before == said)), float(np.mean(after == said)), check,
                          memory_before, by_lab(), time.perf_counter() - began)
    log(f"classes adapted in {done.seconds:.1f} s: {done.agreement_after:.1%} of the named cells "
        f"called as named (before {done.agreement_before:.1%}); infected threshold "
        f"{check.start} -> {check.threshold}" + (f"; {check.still_called} cell(s) named not "
                                                 "infected still called infected"
                                                 if check.still_called else "") + f" -> {path}")
    return done
