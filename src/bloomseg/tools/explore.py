"""Looking at a dataset before training on it: a sample grid, cell statistics, a summary.

Cells are counted twice where the data allows: as connected components of the mask
(touching cells merge into one component) and as annotated boxes (one per cell). The gap
between the two is what instance separation has to close.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloomseg.data.boxes import ellipse_areas, read_boxes
from bloomseg.data.dataset import CLASS_NAMES, Sample, load_sample, scan_split
from bloomseg.errors import BloomsegError, DataError
from bloomseg.figures import pyplot, save_figure
from bloomseg.files import atomic_output, refuse_existing, save_csv, save_json
from bloomseg.settings import POSITIVE_INT, Range

FIGURES = ("sample_grid.png", "image_sizes.png", "cell_fraction.png", "cells_per_image.png",
           "cell_sizes.png")
CLASS_FIGURE = "box_classes.png"
PER_IMAGE_COLUMNS = ("split", "image", "width", "height", "cell_fraction", "components",
                     "specks", "median_component_area", "boxes")
MIN_AREA = 50
"""Components smaller than this (px) are counted as specks, not cells: the BBBC041Seg
masks hold hundreds of single-pixel specks."""
SAMPLES = Range(int, 1, 100)
"""Images the sample grid may show."""


def find_splits(root: str | Path) -> list[str]:
    """The split folders of a dataset root (those holding ``original/``), train and test
    first.

    Raises:
        DataError: there are none.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    found = sorted(p.name for p in root.iterdir() if (p / "original").is_dir())
    if not found:
        raise DataError(f"{root}: no split folders (expected ROOT/{{train,test}}/original/)")
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(found, key=lambda s: (order.get(s, 3), s))


def component_areas(mask: np.ndarray) -> np.ndarray:
    """Pixel areas of the 4-connected components of a bool (H, W) mask."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    return np.bincount(labels.ravel(), minlength=count + 1)[1:]


def image_statistics(sample: Sample, split: str, min_area: int = MIN_AREA) -> dict:
    """Size, cell fraction, component areas (of at least ``min_area`` px; smaller ones
    are counted as specks) and boxes of one labelled image."""
    _, mask = load_sample(sample)  # reads the image too: a size mismatch is an error
    all_areas = component_areas(mask)
    areas = all_areas[all_areas >= min_area]
    boxes = read_boxes(sample.boxes) if sample.boxes is not None else None
    h, w = mask.shape
    return {
        "split": split, "image": sample.stem, "width": w, "height": h,
        "cell_fraction": float(mask.mean()), "components": len(areas), "specks": len(all_areas) - len(areas),
        "median_component_area": float(np.median(areas)) if len(areas) else 0.0,
        "boxes": len(boxes) if boxes is not None else None,
        "component_areas": areas,
        "box_classes": boxes[:, 0].astype(int) if boxes is not None else None,
        "box_areas": ellipse_areas(boxes, h, w) if boxes is not None else None,
    }


def _describe(values: np.ndarray, digits: int = 1) -> str:
    if len(values) == 0:
        return "-"
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    f = f"{{:.{digits}f}}"
    return (f"{f.format(np.mean(values))} (median {f.format(med)}, IQR {f.format(q1)}-"
            f"{f.format(q3)}, range {f.format(np.min(values))}-{f.format(np.max(values))})")


def _stats(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()),
            "max": float(v.max()), "sum": float(v.sum())}


def _summary(stats: list[dict], splits: list[str], root: Path, problems: dict[str, str],
             min_area: int) -> dict:
    out: dict = {"data": str(root.resolve()), "min_area": min_area, "splits": {}}
    for split in splits:
        rows = [r for r in stats if r["split"] == split]
        areas = np.concatenate([r["component_areas"] for r in rows]) if rows else np.zeros(0)
        entry = {
            "images": len(rows),
            "sizes": sorted({f"{r['width']}x{r['height']}" for r in rows}),
            "cell_fraction": _stats([r["cell_fraction"] for r in rows]),
            "components_per_image": _stats([r["components"] for r in rows]),
            "component_area_px": _stats(areas),
            "components": int(len(areas)),
            "specks": int(sum(r["specks"] for r in rows)),
        }
        boxed = [r for r in rows if r["boxes"] is not None]
        if boxed:
            classes = np.concatenate([r["box_classes"] for r in boxed])
            entry["images_with_boxes"] = len(boxed)
            entry["boxes_per_image"] = _stats([r["boxes"] for r in boxed])
            entry["boxes_by_class"] = {CLASS_NAMES.get(int(c), f"class {c}"): int((classes == c).sum())
                                       for c in np.unique(classes)}
            entry["boxes_minus_components"] = _stats([r["boxes"] - r["components"] for r in boxed])
        if split in problems:
            entry["problems"] = problems[split]
        out["splits"][split] = entry
    return out


def _markdown(summary: dict, stats: list[dict], figures: list[str]) -> str:
    lines = [f"# Dataset: {summary['data']}", ""]
    for split, s in summary["splits"].items():
        rows = [r for r in stats if r["split"] == split]
        lines += [f"## {split}: {s['images']} labelled images", ""]
        if s.get("problems"):
            lines += [f"Not used: {s['problems']}", ""]
        if not rows:
            continue
        areas = np.concatenate([r["component_areas"] for r in rows])
        lines += [
            "| statistic | value |", "|---|---|",
            f"| image sizes (W x H) | {', '.join(s['sizes'])} |",
            f"| cell pixel fraction | {_describe(np.array([r['cell_fraction'] for r in rows]), 3)} |",
            f"| mask components per image | {_describe(np.array([r['components'] for r in rows]))} |",
            f"| mask components in all | {s['components']} (plus {s['specks']} specks under "
            f"{summary['min_area']} px, not counted) |",
            f"| component area, px | {_describe(areas, 0)} |",
        ]
        if "boxes_per_image" in s:
            boxed = [r for r in rows if r["boxes"] is not None]
            lines += [
                f"| boxes per image | {_describe(np.array([r['boxes'] for r in boxed]))} |",
                f"| boxes minus components per image | "
                f"{_describe(np.array([r['boxes'] - r['components'] for r in boxed]))} |",
                f"| boxes by class | {', '.join(f'{k}: {v}' for k, v in s['boxes_by_class'].items())} |",
            ]
        lines.append("")
    if any(s.get("boxes_per_image") for s in summary["splits"].values()):
        lines += ["Where an image has more boxes than mask components, touching cells merge "
                  "in the mask: counting cells needs instance separation, not connected "
                  "components.", ""]
    lines += ["## Figures", ""] + [f"- [{name}]({name})" for name in figures] + [""]
    lines += ["Per-image values: [per_image.csv](per_image.csv); all numbers: "
              "[summary.json](summary.json).", ""]
    return "\n".join(lines)


def _sample_grid(samples: list[tuple[str, Sample]], path: Path) -> None:
    plt = pyplot()
    n = len(samples)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 4.4), squeeze=False, constrained_layout=True)
    for col, (split, sample) in enumerate(samples):
        image, mask = load_sample(sample)
        axes[0, col].imshow(image)
        axes[0, col].set_title(f"{split}/{sample.stem}", fontsize=7)
        axes[1, col].imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1, col].set_title(f"mask, {mask.mean():.0%} cell", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(fig, path)


def _plots(stats: list[dict], splits: list[str], out_dir: Path) -> list[str]:
    plt = pyplot()
    by_split = {s: [r for r in stats if r["split"] == s] for s in splits}
    written = []

    def finish(fig, name: str) -> None:
        save_figure(fig, out_dir / name)
        written.append(name)

    fig, ax = plt.subplots(figsize=(5, 4), constrained_layout=True)
    for split, rows in by_split.items():
        sizes = [(r["width"], r["height"]) for r in rows]
        unique, counts = np.unique(np.array(sizes).reshape(-1, 2), axis=0, return_counts=True)
        ax.scatter(unique[:, 0], unique[:, 1], s=30 + 10 * counts, alpha=0.6,
                   label=f"{split} ({len(rows)} images)")
        for (w, h), c in zip(unique, counts):
            ax.annotate(f"{c}", (w, h), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel="width (px)", ylabel="height (px)", title="image sizes (number of images)")
    ax.legend(fontsize=8)
    finish(fig, FIGURES[1])

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.hist([[r["cell_fraction"] for r in rows] for rows in by_split.values()], bins=15,
            label=list(by_split), stacked=True)
    ax.set(xlabel="cell pixel fraction", ylabel="images", title="share of each image that is cell")
    ax.legend()
    finish(fig, FIGURES[2])

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    counts = [r["components"] for r in stats]
    boxes = [r["boxes"] for r in stats if r["boxes"] is not None]
    top = max(counts + boxes) + 1
    bins = np.linspace(0, top, min(30, top) + 1)
    ax.hist(counts, bins=bins, alpha=0.6, label="mask components")
    if boxes:
        ax.hist(boxes, bins=bins, alpha=0.6, label="annotated boxes (cells)")
    ax.set(xlabel="per image", ylabel="images", title="cells per image, all splits")
    ax.legend()
    finish(fig, FIGURES[3])

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    areas = np.concatenate([r["component_areas"] for r in stats])
    box_areas = [r["box_areas"] for r in stats if r["box_areas"] is not None]
    positive = areas[areas > 0]
    if positive.size:
        bins = np.geomspace(max(1, positive.min()), positive.max() + 1, 40)
        ax.hist(positive, bins=bins, alpha=0.6, label="mask components")
        if box_areas:
            ax.hist(np.concatenate(box_areas), bins=bins, alpha=0.6, label="boxes (ellipse area)")
        ax.set_xscale("log")
        ax.legend()
    ax.set(xlabel="area (px, log scale)", ylabel="count",
           title="cell sizes (the largest components are touching cells)")
    finish(fig, FIGURES[4])

    boxed = [r for r in stats if r["box_classes"] is not None]
    if boxed:
        fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
        classes = sorted({int(c) for r in boxed for c in r["box_classes"]})
        x = np.arange(len(classes))
        width = 0.8 / len(splits)
        for i, split in enumerate(splits):
            found = np.concatenate([r["box_classes"] for r in boxed if r["split"] == split] or
                                   [np.zeros(0, int)])
            bars = ax.bar(x + i * width, [(found == c).sum() for c in classes], width, label=split)
            ax.bar_label(bars, fontsize=7)
        ax.set_xticks(x + width * (len(splits) - 1) / 2,
                      [CLASS_NAMES.get(c, f"class {c}") for c in classes], rotation=20)
        ax.set(yscale="log", ylabel="boxes (log scale)", title="annotated cells by class")
        ax.legend()
        finish(fig, CLASS_FIGURE)
    return written


def explore(data: str | Path, out_dir: str | Path, splits: list[str] | None = None,
            samples: int = 6, min_area: int = MIN_AREA, progress: bool = True,
            overwrite: bool = False) -> dict:
    """Describe a labelled dataset with figures, a markdown summary and tables.

    Writes ``sample_grid.png`` (images above their masks), ``image_sizes.png``,
    ``cell_fraction.png``, ``cells_per_image.png`` (mask components, and boxes where
    present), ``cell_sizes.png``, ``box_classes.png`` (where boxes exist),
    ``summary.md``, ``summary.json`` and ``per_image.csv``.

    Args:
        data: dataset root holding ``SPLIT/original`` and ``SPLIT/mask``.
        out_dir: output folder.
        splits: split folders to describe (default: every one found).
        samples: images in the sample grid, spread over all splits.
        min_area: components smaller than this (px) are specks, not cells.
        progress: show a progress bar.
        overwrite: replace the outputs of an earlier survey in ``out_dir``.

    Returns:
        The summary.json content.

    Raises:
        DataError: no dataset, no labelled images, or an unreadable file (named).
        OutputExistsError: ``out_dir`` holds a survey and ``overwrite`` is False.
    """
    from tqdm import tqdm

    SAMPLES.check("samples", samples)
    POSITIVE_INT.check("min_area", min_area)
    root, out_dir = Path(data), Path(out_dir)
    refuse_existing([out_dir / "summary.md"], overwrite)
    splits = splits or find_splits(root)
    chosen: list[tuple[str, Sample]] = []
    problems: dict[str, str] = {}
    for split in splits:
        scan = scan_split(root, split)
        chosen += [(split, s) for s in scan.samples]
        if scan.problems():
            problems[split] = scan.problems()
    if not chosen:
        raise DataError(f"{root}: no image has a mask in {', '.join(splits)}")
    stats, bad = [], []
    for split, sample in tqdm(chosen, desc="exploring", unit="image", disable=not progress):
        try:
            stats.append(image_statistics(sample, split, min_area))
        except BloomsegError as e:  # one bad file is reported, not the end of the survey
            tqdm.write(f"skipped {e}")
            problems[split] = "; ".join(filter(None, [problems.get(split), str(e)]))
            bad.append((split, sample.stem))
    chosen = [(split, s) for split, s in chosen if (split, s.stem) not in bad]
    if not chosen:
        raise DataError(f"{root}: no image could be read; {'; '.join(problems.values())}")
    out_dir.mkdir(parents=True, exist_ok=True)
    picks = np.unique(np.linspace(0, len(chosen) - 1, max(1, min(samples, len(chosen)))).round().astype(int))
    _sample_grid([chosen[i] for i in picks], out_dir / FIGURES[0])
    figures = [FIGURES[0]] + _plots(stats, splits, out_dir)
    summary = _summary(stats, splits, root, problems, min_area)
    save_json(out_dir / "summary.json", summary)
    save_csv(out_dir / "per_image.csv", stats, PER_IMAGE_COLUMNS)
    with atomic_output(out_dir / "summary.md", "w") as f:
        f.write(_markdown(summary, stats, figures))
    return summary
