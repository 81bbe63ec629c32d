"""Scoring a model on a labelled split: metrics files, plots and error pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloomseg.data import load_sample, scan_split
from bloomseg.errors import DataError
from bloomseg.figures import error_map, overlay, pyplot, save_figure
from bloomseg.io import save_json, save_png
from bloomseg.metrics import PixelCounts, report
from bloomseg.predict import Segmenter

PLOTS = ("aggregate_metrics.png", "class_comparison.png", "dice_distribution.png",
         "iou_vs_dice.png")


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


def evaluate(segmenter: Segmenter, data: str | Path, out_dir: str | Path, split: str = "test",
             visualize: int = 0, progress: bool = True) -> dict:
    """Segment every labelled image of ``data/split`` and score it.

    Writes ``metrics.json`` (from confusion counts over all pixels, plus the per-image
    mean), ``per_image_metrics.json``, the four plots, and for ``visualize`` = N the
    N best and N worst images by Dice as image | overlay | error map pictures
    (TP green, FP red, FN blue, TN black) in ``visualizations/``.

    Returns:
        The metrics.json content.

    Raises:
        DataError: no labelled images, or orphans (named).
    """
    from tqdm import tqdm

    scan = scan_split(data, split)
    if scan.problems():
        raise DataError(f"{Path(data) / split}: {scan.problems()}")
    out_dir = Path(out_dir)
    total, per_image = PixelCounts(), []
    for sample in tqdm(scan.samples, desc="evaluating", unit="image", disable=not progress):
        image, mask = load_sample(sample)
        counts = PixelCounts.of(segmenter.predict(image).mask, mask)
        total = total + counts
        per_image.append({"image": sample.stem, "dice": counts.dice, "iou": counts.iou,
                          "tp": counts.tp, "fp": counts.fp, "fn": counts.fn, "tn": counts.tn})
    metrics = report(total) | {"num_samples": len(per_image)}
    metrics["per_image_mean"] = {k: float(np.mean([r[k] for r in per_image])) for k in ("dice", "iou")}
    save_json(out_dir / "metrics.json", metrics)
    save_json(out_dir / "per_image_metrics.json", per_image)
    _plots(metrics, per_image, out_dir)
    ranked = sorted(per_image, key=lambda r: r["dice"], reverse=True)
    chosen = {r["image"]: f"best{i + 1}" for i, r in enumerate(ranked[:visualize])}
    chosen |= {r["image"]: f"worst{i + 1}" for i, r in enumerate(ranked[::-1][:visualize])}
    for sample in scan.samples:
        if sample.stem in chosen:
            image, mask = load_sample(sample)
            pred = segmenter.predict(image).mask
            picture = np.concatenate([image, overlay(image, pred), error_map(pred, mask)], axis=1)
            save_png(out_dir / "visualizations" / f"{chosen[sample.stem]}_{sample.stem}.png", picture)
    return metrics
