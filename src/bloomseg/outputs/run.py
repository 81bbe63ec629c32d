"""Segmenting many image files: outputs per image and a summary, one bad file never
stopping the rest.

One image is one call of :func:`segment_image`, which writes every output atomically and
turns any failure into a summary row; :func:`segment_files` runs its parts in this
process (:func:`read_ahead` and :func:`predict_image`, then the writing it returns: the
next image read and an image's outputs written in threads while one is predicted), and
:mod:`bloomseg.outputs.cluster` on Dask workers, and both end with :func:`finish_run`.
:func:`output_paths` is the one place that names an image's files; the rows it returns
carry them, so the report is handed everything it shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bloomseg.data.dataset import LABELS_END
from bloomseg.errors import BloomsegError
from bloomseg.files import existing
from bloomseg.outputs.options import LARGE_PIXELS, OutputOptions
from bloomseg.outputs.summary import (
    SUMMARY_COLUMNS,
    SUMMARY_FILE,
    class_fields,
    diameter_fields,
    judge_rows,
    qc_fields,
    run_verdict,
    save_cell_table,
    total_row,
)
from bloomseg.quality import judge

COCO_FILE = "cells_coco.json"
"""How an image's label image is named: ``<stem>_labels.tif``."""
RECORDS = ".bloomseg"
"""Folder in the output folder holding ``<stem>.json`` for each image whose outputs are
all written: its summary row, written last, so ``--resume`` knows a finished image
from one a killed run left half done."""


def output_paths(out_dir: Path, stem: str, options: OutputOptions = OutputOptions(),
                 large: bool = False) -> dict[str, Path]:
    """The files :func:`segment_image` writes for one image, by kind. A large image's
    mask is a tiled TIFF and its overlay a reduced picture."""
    paths = {"mask": out_dir / f"{stem}_mask.{'tif' if large else 'png'}",
             "overlay": out_dir / f"{stem}_overlay.png"}
    if options.save_prob:
        paths["prob"] = out_dir / f"{stem}_prob.tif"
    if options.cells:
        paths |= {"labels": out_dir / f"{stem}{LABELS_END}", "cells": out_dir / f"{stem}_cells.csv",
                  "geojson": out_dir / f"{stem}.geojson"}
    return paths


def gallery_path(out_dir: Path, stem: str) -> Path:
    """The picture of an image's infected cells, for a person to check them (written
    where its cells were named and some were called infected)."""
    return out_dir / f"{stem}_infected.png"


def possible_outputs(out_dir: Path, stem: str, options: OutputOptions) -> list[Path]:
    """The files an image may have, whichever size class it falls in."""
    return list(dict.fromkeys([p for large in (False, True)
                               for p in output_paths(out_dir, stem, options, large).values()]
                              + ([gallery_path(out_dir, stem)] if options.cells else [])))


def record_path(out_dir: Path, stem: str) -> Path:
    """Where :func:`segment_image` records that an image is finished."""
    return out_dir / RECORDS / f"{stem}.json"


def read_record(out_dir: Path, stem: str) -> dict | None:
    """What :func:`segment_image` recorded for a finished image, or None."""
    try:
        record = json.loads(record_path(out_dir, stem).read_text("utf-8"))
        return {"row": dict(record["row"]), "large": bool(record["large"]),
                "coco": record.get("coco")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def written_files(out_dir: Path, stem: str, options: OutputOptions, large: bool) -> dict[str, str]:
    """An image's outputs, kind -> file name, with its infected cells' picture where one
    was written."""
    files = {kind: p.name for kind, p in output_paths(out_dir, stem, options, large).items()}
    gallery = gallery_path(out_dir, stem)
    return files | ({"infected": gallery.name} if options.cells and gallery.is_file() else {})


def finished_row(out_dir: Path, path: Path, options: OutputOptions) -> dict | None:
    """The summary row of an image that an earlier run finished with every output these
    options ask for, or None (never done, failed, torn by a kill, or fewer outputs)."""
    record = read_record(out_dir, path.stem)
    if record is None or record["row"].get("status") != "ok" or (
            options.coco and record["coco"] is None):
        return None
    paths = output_paths(out_dir, path.stem, options, record["large"])
    if not all(p.is_file() for p in paths.values()):
        return None
    return (dict.fromkeys(SUMMARY_COLUMNS, "") | record["row"] |
            {"image": str(path), "files": written_files(out_dir, path.stem, options, record["large"])})


def planned_row(out_dir: Path, path: Path, options: OutputOptions, overwrite: bool,
                resume: bool) -> dict | None:
    """The row of an image that needs no work in this run, or None if it is to be done.

    With ``resume``, an image is done if :func:`finished_row` says so, and redone
    otherwise (a torn image's outputs are replaced). Without it, an image with any
    output is skipped unless ``overwrite``.
    """
    if resume:
        return finished_row(out_dir, path, options)
    if not overwrite and existing(possible_outputs(out_dir, path.stem, options)):
        return skipped_row(path)
    return None


def save_cells(image: np.ndarray, labels: np.ndarray, types: list[dict] | None,
               diameter: dict, outputs: dict[str, Path], gallery: Path) -> dict:
    """Write an image's cell outputs from its cells: ``labels`` (TIFF), ``cells`` (the
    cell table), ``geojson``, ``overlay`` (outlines, in class colours where named) and the
    picture of its infected cells beside them (:func:`gallery_path`). The one writer of
    these files, for a prediction and for cells a person corrected.

    Args:
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) cells 1..N, 0 background.
        types: per cell (label order), its class row (:func:`bloomseg.cells.types.cell_types`),
            or None where the cells were not named.
        diameter: the image's :func:`bloomseg.outputs.summary.diameter_fields`.
        outputs: the paths, by kind (:func:`output_paths`).
        gallery: where the infected cells' picture goes (:func:`gallery_path`).

    Returns:
        The image's summary fields of its cells: cells, complete_cells and the class counts.
    """
    from bloomseg.cells.formats import geojson_features, save_labels
    from bloomseg.cells.measure import measure_cells
    from bloomseg.cells.types import class_colours
    from bloomseg.figures import cell_gallery, label_overlay
    from bloomseg.files import save_json, save_png

    cells = measure_cells(labels, image)
    if types is not None and len(types) != len(cells):
        raise ValueError(f"{len(types)} class rows for {len(cells)} cells")
    save_labels(outputs["labels"], labels)
    named = cells if types is None else [c | t for c, t in zip(cells, types)]
    save_cell_table(outputs["cells"], named, diameter, types is not None)
    # one line: a smear's outlines indented are 7x slower to write and twice the size
    save_json(outputs["geojson"], geojson_features(labels, named), indent=None)
    save_png(outputs["overlay"], label_overlay(image, labels, colours=None if types is None
                                               else class_colours(named)))
    infected = [c["id"] for c in named if c.get("class") == "infected"]
    if infected:
        save_png(gallery, cell_gallery(image, labels, infected))
    else:  # an earlier run's picture must not outlive its cells
        gallery.unlink(missing_ok=True)
    return {"cells": len(cells), "complete_cells": sum(not c["touches_border"] for c in cells),
            **class_fields(types)}


CELL_OUTPUTS = OutputOptions(cells=True)
"""The outputs of an image whose cells are given (corrected, or made elsewhere)."""


def write_cells(image: np.ndarray, labels: np.ndarray, types: list[dict] | None,
                diameter: dict, out_dir: Path, stem: str) -> dict:
    """Write the outputs of an image whose cells are given, replacing any: the files
    ``predict --cells`` writes for it, the mask being the cells' pixels.

    Returns:
        The image's summary fields of its cells (:func:`save_cells`).
    """
    from bloomseg.files import save_png

    paths = output_paths(out_dir, stem, CELL_OUTPUTS)
    save_png(paths["mask"], (labels > 0).astype(np.uint8) * 255)
    # a large image's tiled mask from predict would contradict the cells now written
    output_paths(out_dir, stem, CELL_OUTPUTS, large=True)["mask"].unlink(missing_ok=True)
    return save_cells(image, labels, types, diameter, paths, gallery_path(out_dir, stem))


def save_corrected(image: np.ndarray, labels: np.ndarray, types: list[dict] | None,
                   diameter: dict, out_dir: str | Path, stem: str,
                   overwrite: bool = False, refusal: str | None = None,
                   image_too: bool = False) -> dict[str, Path]:
    """Write an image's outputs from cells a person corrected (a viewer's Save): the
    files ``predict`` writes for it with cells (:func:`output_paths`), the mask being the
    cells' pixels.

    Args:
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) cells 1..N, 0 background (numbered without gaps).
        types: per cell, its class row, or None where the cells are not named.
        diameter: the image's :func:`bloomseg.outputs.summary.diameter_fields`.
        out_dir: the output folder; stem: the image's file stem.
        overwrite: replace outputs that exist.
        refusal: what to say where they exist and ``overwrite`` is False (default: the
            command line's words).
        image_too: also write the image as ``<stem>.png`` where the folder holds no image
            of that name, so the folder is one ``bloomseg train --data`` learns from (its
            images beside their ``<stem>_labels.tif``).

    Returns:
        The files written, by kind.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is False.
    """
    from bloomseg.cells.formats import coco_annotations
    from bloomseg.files import refuse_existing, save_json

    out_dir = Path(out_dir)
    refuse_existing(possible_outputs(out_dir, stem, CELL_OUTPUTS), overwrite, refusal)
    fields = write_cells(image, labels, types, diameter, out_dir, stem)
    paths, gallery = output_paths(out_dir, stem, CELL_OUTPUTS), gallery_path(out_dir, stem)
    if image_too:
        from bloomseg.data.images import IMAGE_SUFFIXES
        from bloomseg.files import save_png

        there = [f for f in out_dir.iterdir()
                 if f.stem == stem and f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
        paths["image"] = there[0] if there else out_dir / f"{stem}.png"
        if not there:
            save_png(paths["image"], image)
    record = read_record(out_dir, stem)
    if record is not None:  # predict's record of the image (--resume, summary) counts these
        record["row"] |= fields | {"cell_fraction": f"{(labels > 0).mean():.6f}"}
        save_json(record_path(out_dir, stem), {"row": record["row"], "large": False} |
                  ({"coco": coco_annotations(labels)} if record["coco"] is not None else {}))
    return paths | ({"infected": gallery} if gallery.is_file() else {})


def _read_whole(path: Path, options: OutputOptions) -> np.ndarray:
    from bloomseg.data.images import LazyImage, read_image

    if path.suffix.lower() == ".zarr":
        with LazyImage(path, options.max_pixels) as source:
            return source.read(0, source.shape[0], 0, source.shape[1])
    return read_image(path, options.max_pixels)


def read_ahead(segmenter, path: str | Path, options: OutputOptions = OutputOptions()):
    """An image read, and the cell size it is segmented at decided, before its turn
    (:func:`segment_files` does it while the image before is predicted: the classical
    size estimate is single-threaded work).

    Returns:
        (image, its :class:`~bloomseg.inference.scale.Scale`, or None for a segmenter
        that decides none); None for a large image (read block by block in its turn); or
        the error that reading it raised, for its turn to report.
    """
    from bloomseg.data.images import image_pixels

    path = Path(path)
    try:
        if options.large or (options.large is None and image_pixels(path) > LARGE_PIXELS):
            return None
        image = _read_whole(path, options)
        return image, (segmenter.scale_of(image) if hasattr(segmenter, "scale_of") else None)
    except (BloomsegError, *UNFORESEEN) as e:
        return e


def _predict_in_memory(segmenter, path: Path, outputs: dict[str, Path],
                       options: OutputOptions, read=None) -> Callable[[], tuple[dict, list | None]]:
    """Read (unless ``read`` holds it: :func:`read_ahead`) and predict an image; returns
    what writes its outputs and gives its row's fields (and COCO annotations): the part
    :func:`segment_files` runs while the next image is predicted."""
    image, scale = read if read is not None else (_read_whole(path, options), None)
    result = segmenter.predict(image, instances=options.cells,
                               **({"diameter": scale} if scale is not None else {}))
    row = {"width": image.shape[1], "height": image.shape[0],
           "cell_fraction": f"{result.mask.mean():.6f}", "seconds": f"{result.seconds:.3f}",
           **diameter_fields(result.scale)}
    if result.labels is not None:
        row.update(qc_fields(judge(result), result.red_profile))

    def write() -> tuple[dict, list | None]:
        from PIL import Image

        from bloomseg.cells.formats import coco_annotations
        from bloomseg.figures import overlay
        from bloomseg.files import atomic_output, save_png

        save_png(outputs["mask"], result.mask.astype(np.uint8) * 255)
        if options.save_prob:
            with atomic_output(outputs["prob"]) as f:
                Image.fromarray(result.probability.astype(np.float32), mode="F").save(
                    f, format="TIFF")
        if result.labels is None:
            save_png(outputs["overlay"], overlay(image, result.mask))
            return row, None
        row.update(save_cells(image, result.labels, result.classes, diameter_fields(result.scale),
                              outputs, gallery_path(outputs["labels"].parent, path.stem)))
        return row, coco_annotations(result.labels) if options.coco else None

    return write


def _failed(path: Path, error: Exception) -> str:
    """A row's status for an image that could not be done."""
    if isinstance(error, BloomsegError):
        return f"failed: {error}"
    return f"failed: {path}: {type(error).__name__}: {error}"


UNFORESEEN = (MemoryError, RuntimeError, ValueError, OSError)
"""Trouble with one image that must not end the batch (a bloomseg error aside)."""


def predict_image(segmenter, path: str | Path, out_dir: str | Path,
                  options: OutputOptions = OutputOptions(), progress: bool = False,
                  read=None) -> Callable[[], dict]:
    """:func:`segment_image` in two parts: this one reads and predicts the image (or, for
    a large image, does it all; ``read``: what :func:`read_ahead` gave for it); the
    function it returns writes the outputs and gives the row. Neither raises for a bad
    image: the row says what went wrong."""
    from bloomseg.data.images import LazyImage, image_pixels
    from bloomseg.files import save_json
    from bloomseg.outputs.large import segment_large

    path, out_dir = Path(path), Path(out_dir)
    row = dict.fromkeys(SUMMARY_COLUMNS, "") | {"image": str(path)}
    record = record_path(out_dir, path.stem)
    try:
        record.unlink(missing_ok=True)  # until every output is rewritten
        if isinstance(read, Exception):
            raise read
        large = options.large
        if large is None:
            large = read is None and image_pixels(path) > LARGE_PIXELS
        outputs = output_paths(out_dir, path.stem, options, large)
        if large:
            with LazyImage(path, options.max_pixels) as source:
                done = segment_large(segmenter, source, outputs, options, progress)
            write = lambda: done  # noqa: E731 (written already)
        else:
            write = _predict_in_memory(segmenter, path, outputs, options, read)
    except (BloomsegError, *UNFORESEEN) as e:
        failure = row | {"status": _failed(path, e)}
        return lambda: failure

    def finish() -> dict:
        try:
            fields, annotations = write()
            row.update(fields)
            row["status"] = "ok"
            save_json(record, {"row": row, "large": large} |
                      ({"coco": annotations} if options.coco else {}))
        except (BloomsegError, *UNFORESEEN) as e:
            return row | {"status": _failed(path, e)}
        return row | {"files": written_files(out_dir, path.stem, options, large)}

    return finish


def segment_image(segmenter, path: str | Path, out_dir: str | Path,
                  options: OutputOptions = OutputOptions(), progress: bool = False) -> dict:
    """Segment one image file and write its outputs (:func:`output_paths`), replacing
    any there. Never raises for a bad image: the row says what went wrong.

    Args:
        segmenter: a :class:`bloomseg.inference.segmenter.Segmenter` (or anything with its
            ``predict``).
        path: the image: PNG, JPEG, TIFF, BMP, or a zarr array folder.
        out_dir: the output folder.
        options: what to write.
        progress: a progress bar over the blocks of a large image.

    Returns:
        The image's summary row (:data:`SUMMARY_COLUMNS`); ``status`` is ``ok`` or
        ``failed: ...`` (the reason, naming the file).
    """
    return predict_image(segmenter, path, out_dir, options, progress)()


def finish_run(out_dir: str | Path, rows: list[dict], options: OutputOptions,
               model: str, classifier=None):
    """Judge the run (its verdict, and each image's beside the others: the rows' ``qc``
    change in place), write its summary.csv, the COCO file (with ``coco``) and
    report.html, and clear what killed processes left behind.

    Args:
        classifier: the cell classifier that named the cells (None: none did).

    Returns:
        The run's verdict (:class:`bloomseg.quality.run.RunVerdict`), or None where no
        cells were named.
    """
    from bloomseg.files import remove_stale_temporaries, save_csv, save_json
    from bloomseg.outputs.report import predict_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = [Path(r["image"]).stem for r in rows]
    remove_stale_temporaries(out_dir, [p.name for stem in stems
                                       for p in possible_outputs(out_dir, stem, options)])
    remove_stale_temporaries(out_dir / RECORDS, [record_path(out_dir, stem).name for stem in stems])
    run = judge_rows(rows, run_verdict(rows, classifier))
    total = total_row(rows, options.qc_strict, run)
    save_csv(out_dir / SUMMARY_FILE, rows + ([total] if total else []), SUMMARY_COLUMNS)
    if options.coco:
        save_json(out_dir / COCO_FILE, _coco(out_dir, rows))
    predict_report(out_dir, rows, model, options.cells,
                   [SUMMARY_FILE] + ([COCO_FILE] if options.coco else []), total, run)
    return run


def _coco(out_dir: Path, rows: list[dict]) -> dict:
    """The run's COCO file from each image's recorded annotations; an image whose
    outputs an earlier run wrote without them has its label image read once."""
    from bloomseg.cells.formats import coco_annotations, coco_dataset
    from bloomseg.data.images import read_labels

    images = []
    for r in rows:
        path = Path(r["image"])
        record = read_record(out_dir, path.stem)
        if record is not None and record["coco"] is not None:
            size = (int(record["row"]["height"]), int(record["row"]["width"]))
            images.append((path.name, size, record["coco"]))
        elif (labels := out_dir / f"{path.stem}{LABELS_END}").is_file():
            found = read_labels(labels)
            images.append((path.name, found.shape, coco_annotations(found)))
    return coco_dataset(images)


def skipped_row(path: Path) -> dict:
    """The summary row of an image whose outputs exist already."""
    return dict.fromkeys(SUMMARY_COLUMNS, "") | {
        "image": str(path), "status": "skipped: outputs exist (use --overwrite)"}


_LIBC = None  # the C library once looked up; False where it has no malloc_trim


def trim_heap() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere
    nothing). Freed arrays otherwise leave holes the next image's arrays do not fit, and
    a long run's peak memory creeps up image after image."""
    import ctypes
    import ctypes.util

    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 (absent outside glibc)
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


TRIM_EVERY = 5
"""The heap is trimmed (:func:`trim_heap`) after this many images: each trim costs the
pages it gives back their first touch again, so not after every image."""


def segment_files(segmenter, paths: list[Path], out_dir: str | Path,
                  options: OutputOptions = OutputOptions(), overwrite: bool = False,
                  progress: bool = True, resume: bool = False) -> list[dict]:
    """Segment image files in this process; write each image's outputs
    (:func:`output_paths`), summary.csv and report.html.

    Per image: ``<stem>_mask.png`` (0/255, the image's size; a tiled TIFF for a large
    image) and ``<stem>_overlay.png``; with ``save_prob`` ``<stem>_prob.tif``; with
    ``cells`` ``<stem>_labels.tif`` (cells 1..N, uint16 or uint32),
    ``<stem>_cells.csv`` (measurements per cell), ``<stem>.geojson`` (QuPath detections),
    cell counts in summary.csv and outlines in the overlay; with ``coco`` also
    ``cells_coco.json`` for the run.

    ``overwrite`` replaces outputs that exist (else such images are skipped); ``resume``
    continues a run that was stopped: finished images are kept, the rest (never done,
    failed, or torn by a kill) are done again (see :func:`planned_row`).

    Returns:
        One summary row per input; ``status`` is ``ok``, ``skipped: ...`` (outputs
        exist) or ``failed: ...`` (the reason, naming the file).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    options.check()
    out_dir = Path(out_dir)
    rows: list[dict | None] = [None] * len(paths)
    bar = tqdm(total=len(paths), desc="segmenting", unit="image", disable=not progress)
    todo = []
    for i, path in enumerate(paths):
        rows[i] = planned_row(out_dir, path, options, overwrite, resume)
        if rows[i] is None:
            todo.append((i, path))
        else:
            bar.update()

    done = [0]

    def written(i: int, future) -> None:
        rows[i] = row = future.result()
        done[0] += 1
        if done[0] % TRIM_EVERY == 0:
            trim_heap()
        if progress and row["status"] != "ok":
            tqdm.write(f"skipped {row['status'].removeprefix('failed: ')}")
        bar.update()

    # the next image is read (and its size decided) and an image's outputs written
    # while one is predicted: the network keeps the cores busy while single-threaded
    # work goes on beside it; one image each way at a time, so memory stays flat
    with ThreadPoolExecutor(1, thread_name_prefix="bloomseg-reader") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="bloomseg-writer") as writer:
        try:
            ahead = reader.submit(read_ahead, segmenter, todo[0][1], options) if todo else None
            last = None
            for k, (i, path) in enumerate(todo):
                read = ahead.result()
                if k + 1 < len(todo):
                    ahead = reader.submit(read_ahead, segmenter, todo[k + 1][1], options)
                finish = predict_image(segmenter, path, out_dir, options, progress, read)
                if last is not None:
                    written(*last)
                last = (i, writer.submit(finish))
            if last is not None:
                written(*last)
        finally:
            bar.close()
    finish_run(out_dir, rows, options, segmenter.name, getattr(segmenter, "classifier", None))
    return rows
