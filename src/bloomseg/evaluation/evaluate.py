"""Scoring a model on a labelled split: metrics files, plots and error pictures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bloomseg.cells.matching import BoxMatch, MaskMatch, match_boxes, match_masks, total_boxes
from bloomseg.cells.types import class_colours
from bloomseg.data.boxes import read_boxes, yolo_to_xyxy
from bloomseg.data.dataset import Sample, load_sample, scan_split
from bloomseg.data.images import MAX_PIXELS, read_image, read_labels
from bloomseg.data.vocabulary import DatasetClasses, read_classes
from bloomseg.errors import BloomsegError, DataError
from bloomseg.evaluation.class_scores import (
    CONFUSION_PLOT,
    PARASITEMIA_PLOT,
    ClassTally,
    confusion_plot,
    dataset_kinds,
    parasitemia_plot,
)
from bloomseg.evaluation.pixels import PixelCounts, pixel_scores
from bloomseg.evaluation.verdicts import counted_error, failed, verdict_scores
from bloomseg.figures import error_map, label_overlay, pyplot, save_figure, truth_scatter
from bloomseg.files import refuse_existing, save_json, save_png
from bloomseg.outputs.report import evaluate_report
from bloomseg.outputs.summary import diameter_fields, qc_fields
from bloomseg.quality import judge
from bloomseg.settings import Range

if TYPE_CHECKING:  # the model loads with the first image, not with the command line
    from bloomseg.inference.segmenter import Prediction, Segmenter

PLOTS = ("aggregate_metrics.png", "class_comparison.png", "dice_distribution.png",
         "iou_vs_dice.png")
COUNT_PLOT = "counts.png"
METRICS = "metrics.json"
VISUALIZE = Range(int, 0, 1000)
"""Best and worst images ``--visualize`` may picture."""


def _box_summary(matches: list[BoxMatch]) -> dict:
    """Instance metrics over images from their box matches."""
    t = total_boxes(matches)
    return {
        "images": len(matches), "iou_threshold": 0.5, "tp": t.tp, "fp": t.fp, "fn": t.fn,
        "ignored_border_cells": t.ignored, "precision": t.precision, "recall": t.recall,
        "f1": t.f1, "strict": {"fp": t.strict_fp, "precision": t.strict_precision, "f1": t.strict_f1},
        "true_cells": t.true, "predicted_complete_cells": t.predicted,
        "mean_count_error": float(np.mean([m.count_error for m in matches])),
        "mean_absolute_count_error": float(np.mean([abs(m.count_error) for m in matches])),
        "mean_relative_count_error": float(np.mean([m.relative_count_error for m in matches])),
    }


def _count_plot(per_image: list[dict], path: Path) -> None:
    true = [r["true_cells"] for r in per_image]
    truth_scatter(true, [r["complete_cells"] for r in per_image], path, "true cells (boxes)",
                  "predicted cells (not touching the border)", f"cells per image, {len(true)} images")


def _plots(metrics: dict, per_image: list[dict], out_dir: Path) -> None:
    plt = pyplot()
    names = ["iou", "dice", "precision", "recall"]
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    values = [metrics[n]["mean"] for n in names] + [metrics["accuracy"], metrics["f1"]]
    labels = [f"mean {n}" for n in names] + ["accuracy", "F1 (cell)"]
    bars = ax.bar(labels, values, color="tab:blue")
    ax.bar_label(bars, fmt="%.4f")
    ax.set(ylim=(0, 1.05), title=f"aggregate metrics, {metrics['num_samples']} images")
    ax.tick_params(axis="x", rotation=20)
    save_figure(fig, out_dir / PLOTS[0])

    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    x = np.arange(len(names))
    for offset, cls, colour in ((-0.2, "background", "tab:grey"), (0.2, "cell", "tab:red")):
        bars = ax.bar(x + offset, [metrics[n][cls] for n in names], 0.4, label=cls, color=colour)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set(xticks=x, xticklabels=names, ylim=(0, 1.1), title="background vs cell")
    ax.legend(loc="lower right")
    save_figure(fig, out_dir / PLOTS[1])

    dice = [r["dice"] for r in per_image]
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.hist(dice, bins=min(20, max(5, len(dice))), color="tab:blue", edgecolor="white")
    ax.axvline(float(np.mean(dice)), color="k", linestyle="--", label=f"mean {np.mean(dice):.4f}")
    ax.set(xlabel="Dice (cell)", ylabel="images", title="per-image Dice")
    ax.legend()
    save_figure(fig, out_dir / PLOTS[2])

    fig, ax = plt.subplots(figsize=(5, 5), constrained_layout=True)
    ax.scatter([r["iou"] for r in per_image], dice, s=20)
    grid = np.linspace(0, 1, 101)
    ax.plot(grid, 2 * grid / (1 + grid), "k:", label="Dice = 2 IoU / (1 + IoU)")
    ax.set(xlabel="IoU (cell)", ylabel="Dice (cell)", title="per image")
    ax.legend()
    save_figure(fig, out_dir / PLOTS[3])


def _load(sample: Sample, max_pixels: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A sample's image and its mask (None: it has boxes only)."""
    if sample.mask is None:
        return read_image(sample.image, max_pixels), None
    return load_sample(sample, max_pixels)


def _score(segmenter: Segmenter, sample: Sample, max_pixels: int | None, cells: bool
           ) -> tuple[PixelCounts | None, dict, BoxMatch | None, MaskMatch | None, Prediction]:
    """One sample's pixel counts (None where it has no mask), per-image row, box and mask
    matches (None where the sample has no boxes or labels) and prediction (its cells
    separated where it has boxes or labels, or where ``cells`` asks for them)."""
    image, mask = _load(sample, max_pixels)
    boxes = read_boxes(sample.boxes) if sample.boxes is not None else None
    true_labels = None
    if sample.labels is not None:
        true_labels = read_labels(sample.labels)
        if true_labels.shape != image.shape[:2]:
            raise DataError(f"{sample.labels}: labels are {true_labels.shape[::-1]} but the "
                            f"image is {image.shape[1::-1]}")
    result = segmenter.predict(image, instances=cells or boxes is not None
                               or true_labels is not None)
    row: dict = {"image": sample.stem}
    counts = None
    if mask is not None:
        counts = PixelCounts.of(result.mask, mask)
        row |= {"dice": counts.dice, "iou": counts.iou, "tp": counts.tp, "fp": counts.fp,
                "fn": counts.fn, "tn": counts.tn}
    row |= diameter_fields(result.scale)
    box_match = mask_match = None
    if boxes is not None:
        m = box_match = match_boxes(result.labels, yolo_to_xyxy(boxes, *image.shape[:2]))
        row |= {"cells": int(result.labels.max()), "complete_cells": m.predicted,
                "true_cells": m.true, "cell_tp": m.tp, "cell_fp": m.fp, "cell_fn": m.fn,
                "cell_f1": m.f1, "count_error": m.count_error,
                "relative_count_error": m.relative_count_error}
    if true_labels is not None:
        mask_match = match_masks(result.labels, true_labels)
        row |= {"mask_f1": mask_match.f1, "panoptic_quality": mask_match.panoptic_quality}
    if result.labels is not None and (box_match is not None or counts is not None):
        truth = {} if box_match is None else {
            "f1": box_match.f1, "count_error": counted_error(box_match),
            "boxes": box_match.true}
        row |= qc_fields(judge(result)) | {"failed": failed(
            dice=None if counts is None else counts.dice, **truth)}
    return counts, row, box_match, mask_match, result


def _dataset_classes(data: str | Path) -> DatasetClasses | None:
    """The dataset's classes where its classes.txt can be read (else its cells' classes
    are not scored)."""
    try:
        return read_classes(data)
    except DataError:
        return None


def _rank(row: dict) -> float:
    """What the best and worst images are chosen by: Dice, or cell F1 without a mask."""
    return row["dice"] if "dice" in row else row.get("cell_f1", 0.0)


def _extremes(kept: list[tuple[dict, Prediction]], n: int) -> list[tuple[dict, Prediction]]:
    """The ``n`` best and ``n`` worst by :func:`_rank` of the images so far (ties: the
    best are the first seen, the worst the last), as a full ranking would pick them: a
    later image can only push an image out of these, never bring one back."""
    ranked = sorted(kept, key=lambda k: _rank(k[0]), reverse=True)
    chosen = {id(k[0]) for k in ranked[:n] + ranked[::-1][:n]}
    return [k for k in kept if id(k[0]) in chosen]


def evaluate(segmenter: Segmenter, data: str | Path, out_dir: str | Path, split: str = "test",
             visualize: int = 0, progress: bool = True, max_pixels: int | None = MAX_PIXELS,
             overwrite: bool = False) -> dict:
    """Segment every labelled image of ``data/split`` and score it.

    Writes ``metrics.json`` (from confusion counts over all pixels of the images with
    masks, plus the per-image mean), ``per_image_metrics.json``, the four pixel plots,
    ``report.html``, and for ``visualize`` = N the N best and N worst images by Dice (by
    cell F1 where there are no masks) as image | overlay | error map pictures (TP green,
    FP red, FN blue, TN black; without a mask, image | overlay) in ``visualizations/``.
    An image may have a mask, boxes or both: a split of boxes only (such as txlpbc) is
    scored by its cells alone.

    Where the model names cells and the dataset's classes.txt names its box classes,
    ``metrics.json`` gains ``classes`` (see :mod:`bloomseg.evaluation.class_scores`), with
    ``class_confusion.png`` and ``parasitemia.png``, and each image's row its true and
    predicted parasitemia.

    Where the split has boxes (``boxes/``), cells are separated and ``metrics.json``
    gains ``instances.boxes`` (matching at IoU 0.5, see :mod:`bloomseg.cells.matching`, and
    count errors) and ``counts.png``; where it has instance labels (``labels/``),
    ``instances.masks`` (stardist-style precision, recall, F1 and panoptic quality).

    A sample that cannot be read (image, mask, boxes or labels) is skipped and listed in
    ``metrics.json`` under ``skipped`` with the reason; the metrics are over the rest.
    Each image is predicted once; the pictures reuse the predictions of the images they
    show (only those are kept).

    Returns:
        The metrics.json content.

    Raises:
        DataError: no usable labelled images, or orphans (named).
        OutputExistsError: ``out_dir`` holds metrics and ``overwrite`` is False.
    """
    from tqdm import tqdm

    VISUALIZE.check("visualize", visualize)
    refuse_existing([Path(out_dir) / METRICS], overwrite)
    scan = scan_split(data, split, need_mask=False)
    if scan.problems():
        raise DataError(f"{Path(data) / split}: {scan.problems()}")
    out_dir = Path(out_dir)
    total, masked, per_image, skipped = PixelCounts(), 0, [], []
    box_matches, mask_total, mask_images = [], MaskMatch(), 0
    names = _dataset_classes(data)
    tally = ClassTally()
    kept: list[tuple[dict, Prediction]] = []  # candidates for the pictures
    for sample in tqdm(scan.samples, desc="evaluating", unit="image", disable=not progress):
        try:
            counts, row, box_match, mask_match, result = _score(segmenter, sample, max_pixels,
                                                                visualize > 0)
        except BloomsegError as e:
            skipped.append({"image": sample.stem, "reason": str(e)})
            continue
        if visualize:
            kept = _extremes(kept + [(row, result)], visualize)
        if counts is not None:
            total, masked = total + counts, masked + 1
        if box_match is not None:
            box_matches.append(box_match)
        if mask_match is not None:
            mask_total, mask_images = mask_total + mask_match, mask_images + 1
        if names is not None and result.classes is not None and sample.boxes is not None:
            yolo = read_boxes(sample.boxes)
            try:
                targets = names.targets(yolo[:, 0])
            except DataError as e:
                skipped.append({"image": sample.stem, "reason": f"{sample.boxes}: {e}"})
                continue
            row |= tally.add(sample.stem, result.labels, result.classes,
                             yolo_to_xyxy(yolo, *result.labels.shape), targets)
        per_image.append(row)
    if not per_image:
        raise DataError(f"{Path(data) / split}: none of the {len(skipped)} images could be "
                        "used:\n  " + "\n  ".join(s["reason"] for s in skipped))
    metrics = (pixel_scores(total) if masked else {}) | {"num_samples": len(per_image),
                                                          "skipped": skipped}
    if masked:
        metrics["per_image_mean"] = {k: float(np.mean([r[k] for r in per_image if k in r]))
                                     for k in ("dice", "iou")}
    if box_matches or mask_images:
        metrics["instances"] = {"method": segmenter.separation.as_dict()}
    if box_matches:
        metrics["instances"]["boxes"] = _box_summary(box_matches)
        _count_plot([r for r in per_image if "true_cells" in r], out_dir / COUNT_PLOT)
    if mask_images:
        metrics["instances"]["masks"] = {
            "images": mask_images, "iou_threshold": 0.5, "tp": mask_total.tp,
            "fp": mask_total.fp, "fn": mask_total.fn, "precision": mask_total.precision,
            "recall": mask_total.recall, "f1": mask_total.f1,
            "panoptic_quality": mask_total.panoptic_quality}
    if any("qc" in r for r in per_image):
        metrics["quality"] = verdict_scores(per_image)
    class_plots = []
    if tally.confusion.sum() or tally.parasitemia:
        metrics["classes"] = tally.summary(dataset_kinds(names))
        confusion_plot(metrics["classes"], out_dir / CONFUSION_PLOT)
        class_plots.append(CONFUSION_PLOT)
        if "parasitemia" in metrics["classes"]:
            parasitemia_plot(tally, out_dir / PARASITEMIA_PLOT)
            class_plots.append(PARASITEMIA_PLOT)
    save_json(out_dir / METRICS, metrics)
    save_json(out_dir / "per_image_metrics.json", per_image)
    if masked:
        _plots(metrics, [r for r in per_image if "dice" in r], out_dir)
    ranked = sorted(per_image, key=_rank, reverse=True)
    chosen = {r["image"]: f"best{i + 1}" for i, r in enumerate(ranked[:visualize])}
    chosen |= {r["image"]: f"worst{i + 1}" for i, r in enumerate(ranked[::-1][:visualize])}
    predictions = {row["image"]: result for row, result in kept}
    pictures = []
    for sample in scan.samples:
        if sample.stem in chosen:
            image, mask = _load(sample, max_pixels)  # decoding is cheap; predicting not
            result = predictions[sample.stem]
            colours = None if result.classes is None else class_colours(result.classes)
            parts = [image, label_overlay(image, result.labels, colours=colours)]
            picture = np.concatenate(parts + ([] if mask is None
                                              else [error_map(result.mask, mask)]), axis=1)
            pictures.append(f"visualizations/{chosen[sample.stem]}_{sample.stem}.png")
            save_png(out_dir / pictures[-1], picture)
    plots = (list(PLOTS) if masked else []) + ([COUNT_PLOT] if box_matches else []) + class_plots
    evaluate_report(out_dir, metrics, per_image, segmenter.name, str(Path(data) / split),
                    plots, sorted(pictures))
    return metrics
