"""Training examples: the datasets of a run, their images and, per epoch, the views, flips,
colour and microscope draws that become the network's inputs and targets.

Every draw comes from a generator seeded by (seed, epoch) or by the item itself, so a
resumed run repeats exactly what an uninterrupted one does, and a cached variant of a
tile always gets the same colour draw (its cached features stay valid).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bloomseg.data.boxes import labels_to_yolo, read_boxes, yolo_to_cxcywh
from bloomseg.data.dataset import (
    Sample,
    cell_diameters,
    has_split,
    load_or_make_splits,
    pooled_median,
    scan_split,
)
from bloomseg.data.images import read_labels
from bloomseg.errors import BloomsegError, DataError
from bloomseg.model.inputs import (
    View,
    dihedral,
    dihedral_boxes,
    image_levels,
    level_sample,
    normalise,
    random_view,
    render,
    training_views,
)
from bloomseg.train.augment import ColourJitter, Microscope
from bloomseg.train.cache import ImageStore, content_key, scaled_key
from bloomseg.train.centres import centre_map
from bloomseg.train.config import TrainConfig
from bloomseg.train.losses import BoxTarget


@dataclass
class TrainImage:
    """One training or validation image: where it is, the scale it is used at, its fixed
    views and its boxes.

    Attributes:
        sample: its files (``mask`` None: its mask is learned from its boxes).
        source_key: the content key of its files (:func:`content_key`).
        factor: how much it is scaled so its cells are at the model's diameter.
        size: (H, W) px, scaled.
        views: its fixed training views, in scaled pixels.
        boxes: YOLO rows (class, cx, cy, w, h as fractions: scaling leaves them as they
            are), or None.
        sigma: the centre Gaussian's sigma as a share of the box size.
        dataset: the name of the dataset it belongs to.
        exhaustive: its boxes hold every cell, so what lies outside them is background.
    """

    sample: Sample
    source_key: str
    factor: float
    size: tuple[int, int]
    views: list[View]
    boxes: np.ndarray | None
    sigma: float
    dataset: str = ""
    exhaustive: bool = True
    _overview: np.ndarray | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """What its scaled pixels and their features are cached under."""
        return scaled_key(self.source_key, self.factor)

    def pixels(self, store: ImageStore) -> tuple[np.ndarray, np.ndarray | None]:
        """Its (H, W, 3) uint8 image and (H, W) bool mask (None: boxes only), scaled."""
        return store.load(self.sample, self.source_key, self.factor)

    def overview(self, store: ImageStore) -> np.ndarray:
        """Its scaled image's :func:`level_sample`: what its
        levels and mean grey are measured on, kept in memory."""
        if self._overview is None:
            self._overview = level_sample(self.pixels(store)[0])
        return self._overview

    def centres(self, view: View) -> np.ndarray:
        """The centre-map target of a view of this image."""
        return centre_map(yolo_to_cxcywh(self.boxes, *self.size), view.y, view.x, view.h, view.w,
                          self.sigma)


@dataclass
class Dataset:
    """One ``--data`` root of a run.

    Attributes:
        name: unique in the run (the folder's name, numbered where two share it).
        root: the folder.
        train, val: its images.
        val_from: where its validation images come from: ``ROOT/val``, a splits file, or
            ``none``.
        exhaustive: its boxes hold every cell.
    """

    name: str
    root: str
    train: list[TrainImage]
    val: list[TrainImage]
    val_from: str
    exhaustive: bool

    def record(self, items_per_epoch: int, share: float) -> dict:
        """What config.json says of it."""
        every = self.train + self.val
        return {"name": self.name, "root": self.root, "train_images": len(self.train),
                "val_images": len(self.val), "val_from": self.val_from,
                "with_masks": sum(i.sample.masked for i in every),
                "boxes_only": sum(not i.sample.masked for i in every),
                "exhaustive_boxes": self.exhaustive, "items_per_epoch": items_per_epoch,
                "share": round(share, 4)}


Item = tuple[TrainImage, View, int, int]
"""(image, view, dihedral variant, draw seed): one example of an epoch."""


@dataclass
class Example:
    """One network input and its targets, in the input's pixels.

    Attributes:
        rgb: (T, T, 3) uint8 (or the whole image's size), as the network sees it.
        mask: (T, T) bool, or None (boxes only).
        centres: (T, T) float32 centre target, or None (no boxes).
        boxes: where the mask is learned from boxes, the boxes; else None.
        size: log(the cells' diameter in ``rgb`` / the run's cell diameter): the size
            head's target (0 where the view was not scaled).
    """

    rgb: np.ndarray
    mask: np.ndarray | None
    centres: np.ndarray | None
    boxes: BoxTarget | None
    size: float = 0.0


def item_seed(*parts: object) -> int:
    """A stable 63-bit seed from anything printable (Python's hash() varies per process)."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16)


def dataset_names(roots: list[str]) -> list[str]:
    """A name per root: its folder's name, numbered where two roots share one."""
    names = [Path(r).name or "data" for r in roots]
    return [f"{n}-{names[:i].count(n) + 1}" if names.count(n) > 1 else n
            for i, n in enumerate(names)]


def _read_split(cfg: TrainConfig, store: ImageStore, root: str, split: str, name: str,
                progress: bool) -> dict[str, TrainImage]:
    """The labelled images of one split of one root, decoded into ``store``, by stem."""
    from tqdm import tqdm

    scan = scan_split(root, split, need_mask=False)
    if scan.problems():
        raise DataError(f"{Path(root) / split}: {scan.problems()} (every image needs a mask "
                        "<stem>.png in mask/, boxes <stem>.txt in boxes/ or labels in labels/ "
                        "(in a flat folder, <stem>_labels.tif beside it), and every mask an "
                        "image)")
    ignore = root in cfg.ignore_masks
    exhaustive = root not in cfg.partial_boxes
    images, errors = {}, []
    for sample in tqdm(scan.samples, desc=f"reading {name}/{split}", unit="image",
                       disable=not progress, leave=False):
        if ignore:
            sample = replace(sample, mask=None, labels=None)
        if not sample.masked and sample.boxes is None:
            errors.append(f"{sample.image}: no boxes to learn its mask from (its mask is "
                          "ignored)")
            continue
        try:
            key = content_key(sample)
            image, _ = store.load(sample, key)
            # instance labels give the boxes (and so the centre targets) too
            boxes = read_boxes(sample.boxes) if sample.boxes is not None else \
                labels_to_yolo(read_labels(sample.labels)) if sample.labels is not None else None
        except BloomsegError as e:
            errors.append(str(e))
            continue
        images[sample.stem] = TrainImage(sample, key, 1.0, image.shape[:2], [], boxes,
                                         cfg.centre_sigma, name, exhaustive)
    if errors:
        raise DataError(f"{len(errors)} training file(s) cannot be used:\n  " + "\n  ".join(errors))
    return images


def read_datasets(cfg: TrainConfig, store: ImageStore, run_dir: str | Path,
                  progress: bool = False) -> list[Dataset]:
    """Every ``--data`` root's train and validation images, decoded into ``store``, with
    their boxes and fixed training views.

    Validation images come from ``ROOT/val`` where it exists, else from a seeded share
    (``cfg.val_fraction``) of ``ROOT/train`` kept in ``splits.json``; with a
    ``val_fraction`` of 0 every image trains.

    Sets ``cfg.cell_diameter`` where it is None: the median diameter of the train images'
    whole cells (:func:`bloomseg.data.dataset.cell_diameters`, pooled). With
    ``cfg.common_size``, each image is scaled so that its cells are at that diameter: by
    the median of its own whole boxes, else by its dataset's median; masks, boxes and
    centre targets with it, and its views are cut from the scaled image.

    Raises:
        DataError: orphans, or files that cannot be used (every one named).
    """
    datasets = []
    for root, name in zip(cfg.data, dataset_names(cfg.data)):
        train = _read_split(cfg, store, root, "train", name, progress)
        if cfg.hold_out:  # the images the user named, wherever they are
            val = {s: train.pop(s) for s in cfg.hold_out if s in train}
            val_from = "--hold-out"
        elif not cfg.val_fraction:  # a final fit on every image
            val_images = (_read_split(cfg, store, root, "val", name, progress)
                          if has_split(root, "val") else {})
            train |= {f"val/{s}": img for s, img in val_images.items()}
            val, val_from = {}, "none"
        elif has_split(root, "val"):
            val, val_from = _read_split(cfg, store, root, "val", name, progress), f"{root}/val"
        else:  # split only data that reads cleanly, so a failed start writes no splits.json
            fallback = Path(run_dir) / (f"splits-{name}.json" if len(cfg.data) > 1
                                        else "splits.json")
            splits, path = load_or_make_splits(root, list(train), fallback, cfg.seed,
                                               cfg.val_fraction)
            val = {s: train.pop(s) for s in splits["val"]}
            val_from = str(path) if path else "a split written nowhere"
        if not train:
            raise DataError(f"{root}: no training image is left once --hold-out's are taken")
        datasets.append(Dataset(name, root, list(train.values()), list(val.values()), val_from,
                                root not in cfg.partial_boxes))
    found = {img.sample.stem for d in datasets for img in d.val}
    missing = [s for s in cfg.hold_out if s not in found]
    if missing:
        raise DataError(f"--hold-out: no training image named {', '.join(missing)} in "
                        f"{', '.join(cfg.data)}")
    _common_size(cfg, store, datasets)
    return datasets


def _common_size(cfg: TrainConfig, store: ImageStore, datasets: list[Dataset]) -> None:
    """Measure the cells, set the run's diameter, scale the images, and cut their views."""
    everything = [(d, img) for d in datasets for img in d.train + d.val]
    # each image's whole cells: from its boxes, else its mask's components
    diameters = {id(img): cell_diameters(img.boxes, None if img.boxes is not None
                                         else np.asarray(img.pixels(store)[1]), img.size)
                 for _, img in everything}
    by_dataset = {d.name: pooled_median([diameters[id(i)] for i in d.train]) for d in datasets}
    if cfg.cell_diameter is None:  # the scale the model learns cells at
        cfg.cell_diameter = pooled_median([diameters[id(i)] for d in datasets for i in d.train])
    for d, img in everything:
        if cfg.common_size and cfg.cell_diameter is not None:
            own = diameters[id(img)] if img.boxes is not None else []
            diameter = float(np.median(own)) if len(own) else by_dataset[d.name]
            if diameter:
                img.factor = round(cfg.cell_diameter / diameter, 5)
                img.size = img.pixels(store)[0].shape[:2]
        rng = np.random.default_rng(item_seed(cfg.seed, img.key, "views"))
        img.views = training_views(*img.size, cfg.mode, cfg.tile, cfg.tiles_per_image, rng)


def render_example(cfg: TrainConfig, store: ImageStore, jitter: ColourJitter | None,
                   microscope: Microscope | None, item: Item) -> Example:
    """The network input and targets of one item: its view, scaled, augmented and
    normalised as its seed draws them, in its flip/rotation variant."""
    img, view, k, seed = item
    image, mask = img.pixels(store)
    rng = np.random.default_rng(seed)
    overview = img.overview(store)
    draws = microscope.draw(rng, float(overview.mean()) / 255) if microscope else {}
    factor = draws.get("scale", 1.0)
    region = _region(view, factor, img.size)
    rgb = np.asarray(image[region.y:region.y + region.h, region.x:region.x + region.w])
    label = None if mask is None else np.asarray(
        mask[region.y:region.y + region.h, region.x:region.x + region.w])
    # never past the view (rounding): a tile stays a tile
    size = (max(1, min(view.h, round(region.h * factor))),
            max(1, min(view.w, round(region.w * factor))))
    if factor != 1:
        rgb, label = _resized(rgb, size), None if label is None else _resized(label, size)
    # boxes in the input's pixels: whole for the centres, clipped for the projections
    boxes = None
    if img.boxes is not None:
        cxcywh = yolo_to_cxcywh(img.boxes, *img.size)
        cxcywh[:, :2] -= (region.x, region.y)
        boxes = cxcywh * (size[1] / region.w, size[0] / region.h, size[1] / region.w,
                          size[0] / region.h)
    local = View(view.name, 0, 0, *size)
    centres = None
    if cfg.centres and boxes is not None:
        centres = dihedral(render(centre_map(boxes, 0, 0, *size, img.sigma), local, cfg.mode,
                                  cfg.tile), k)
    if microscope is not None:
        rgb = microscope.optics(microscope.pixelwise(rgb, draws), draws)
        overview = microscope.pixelwise(overview, draws)
    if jitter is not None:  # without microscope draws, the item's seed (as before them)
        jitter_seed = seed if microscope is None else int(rng.integers(2**63))
        rgb = jitter(rgb, np.random.default_rng(jitter_seed))
        overview = jitter(overview, np.random.default_rng(jitter_seed))
    rgb = normalise(rgb, cfg.normalise, image_levels(overview) if cfg.normalise != "none" else None)
    rendered = render(rgb, local, cfg.mode, cfg.tile)
    target = None
    if label is None and boxes is not None:
        if cfg.mode == "resize":  # the image part fills the input
            sy, sx = rendered.shape[0] / size[0], rendered.shape[1] / size[1]
            boxes, size = boxes * (sx, sy, sx, sy), rendered.shape[:2]
        target = _box_target(boxes, size, rendered.shape[:2], img.exhaustive, k)
    label = None if label is None else dihedral(render(label, local, cfg.mode, cfg.tile), k)
    # the scale actually made (rounding to whole pixels), which the size head learns
    made = np.sqrt(size[0] * size[1] / (region.h * region.w))
    return Example(dihedral(rendered, k), label, centres, target, float(np.log(made)))


def _region(view: View, factor: float, size: tuple[int, int]) -> View:
    """The part of the image a view scaled by ``factor`` about its centre shows (inside
    the image)."""
    if factor == 1:
        return view
    h, w = min(size[0], round(view.h / factor)), min(size[1], round(view.w / factor))
    y = int(np.clip(round(view.y + (view.h - h) / 2), 0, size[0] - h))
    x = int(np.clip(round(view.x + (view.w - w) / 2), 0, size[1] - w))
    return View(view.name, y, x, h, w)


def _resized(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) uint8 image or (H, W) bool mask resized to ``size`` (bilinear)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.array(array)).float()  # a copy: memory maps are read-only
    x = x[None, None] if array.ndim == 2 else x.permute(2, 0, 1)[None]
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if array.dtype == bool:
        return (out[0] > 0.5).numpy()
    return out.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def whole_box_target(img: TrainImage) -> BoxTarget:
    """The box supervision of a whole (scaled) image: what validation measures the loss
    of an image without a mask with."""
    return _box_target(yolo_to_cxcywh(img.boxes, *img.size), img.size, img.size,
                       img.exhaustive, 0)


def _box_target(cxcywh: np.ndarray, size: tuple[int, int], shape: tuple[int, int],
                exhaustive: bool, k: int) -> BoxTarget:
    """The box supervision of an input of ``shape`` whose image part is ``size``."""
    h, w = size
    x0, y0 = cxcywh[:, 0] - cxcywh[:, 2] / 2, cxcywh[:, 1] - cxcywh[:, 3] / 2
    x1, y1 = x0 + cxcywh[:, 2], y0 + cxcywh[:, 3]
    clipped = np.stack([np.clip(x0, 0, w), np.clip(y0, 0, h), np.clip(x1, 0, w),
                        np.clip(y1, 0, h)], axis=1).round().astype(int)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    # a box cut by the view keeps its cell in every one of its lines across the cut only
    rows = (np.round(x0) >= 0) & (np.round(x1) <= w)
    cols = (np.round(y0) >= 0) & (np.round(y1) <= h)
    background = None
    if exhaustive:  # known: inside the image part, outside every box
        background = np.zeros(shape, bool)
        background[:h, :w] = True
        for bx0, by0, bx1, by1 in clipped[keep]:
            background[by0:by1, bx0:bx1] = False
        background = dihedral(background, k)
    moved = dihedral_boxes(clipped[keep], k, *shape).round().astype(int)
    rows, cols = rows[keep], cols[keep]
    if k % 2:  # a quarter turn makes rows of columns
        rows, cols = cols, rows
    return BoxTarget(moved, rows, cols, background)


def epoch_items(cfg: TrainConfig, datasets: list[list[TrainImage]], epoch: int, cached: bool
                ) -> list[Item]:
    """This epoch's items, in training order.

    One dataset: each image gives its views. Several: each dataset gives an equal share
    of the items (of as many as all images' views), drawn from its images, so a small
    dataset is not drowned by a large one.

    Args:
        cfg: the run's settings.
        datasets: the training images of each dataset.
        epoch: 1-based; with the seed it seeds every draw.
        cached: features are cached, so each image keeps its fixed views and each
            variant its one draw (otherwise tiles are fresh crops each epoch).
    """
    rng = np.random.default_rng([cfg.seed, epoch])
    variants = cfg.variants()
    fresh = not cached and cfg.mode == "tiling"  # nothing to reuse: fresh crops
    chosen: list[tuple[TrainImage, list[View]]] = []
    if len(datasets) == 1 and cfg.items_per_epoch is None:
        for img in datasets[0]:
            chosen.append((img, [random_view(*img.size, cfg.tile, rng)
                                 for _ in range(cfg.tiles_per_image)] if fresh else img.views))
    else:
        for images, count in zip(datasets, items_per_dataset(cfg, datasets)):
            if cfg.items_per_epoch is None:
                picks = rng.choice(len(images), size=count)
            else:  # each image in turn: a few images share the epoch evenly
                rounds = -(-count // len(images))
                picks = np.concatenate([rng.permutation(len(images)) for _ in range(rounds)])
            for i in picks[:count]:
                img = images[i]
                view = (random_view(*img.size, cfg.tile, rng) if fresh
                        else img.views[int(rng.integers(len(img.views)))])
                chosen.append((img, [view]))
    items = []
    for img, views in chosen:
        for view in views:
            k = int(rng.choice(variants))
            seed = item_seed(cfg.seed, img.key, view.name, k) if cached else int(rng.integers(2**63))
            items.append((img, view, k, seed))
    return [items[i] for i in rng.permutation(len(items))]


def items_per_dataset(cfg: TrainConfig, datasets: list[list[TrainImage]]) -> list[int]:
    """Items per epoch of each dataset: its views alone, or an equal share of all (of
    ``cfg.items_per_epoch`` where it is set)."""
    views = [sum(len(img.views) for img in images) for images in datasets]
    total = cfg.items_per_epoch or sum(views)
    if len(datasets) == 1:
        return [total] if cfg.items_per_epoch else views
    return [max(1, round(total / len(datasets)))] * len(datasets)
