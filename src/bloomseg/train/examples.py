"""Training examples: the images of a run and, per epoch, the views, flips and colour
draws that become the network's inputs and targets.

Every draw comes from a generator seeded by (seed, epoch) or by the item itself, so a
resumed run repeats exactly what an uninterrupted one does, and a cached variant of a
tile always gets the same colour draw (its cached features stay valid).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bloomseg.data.boxes import read_boxes, yolo_to_cxcywh
from bloomseg.data.dataset import Sample, cell_diameters, pooled_median, scan_split
from bloomseg.errors import BloomsegError, DataError
from bloomseg.model.inputs import View, dihedral, random_view, render, training_views
from bloomseg.train.augment import ColourJitter
from bloomseg.train.cache import ImageStore, content_key, scaled_key
from bloomseg.train.centres import centre_map
from bloomseg.train.config import TrainConfig


@dataclass
class TrainImage:
    """One training or validation image: where it is, the scale it is used at, its fixed
    views and its boxes.

    Attributes:
        sample: its files.
        source_key: the content key of its files (:func:`content_key`).
        factor: how much it is scaled so its cells are at the model's diameter.
        size: (H, W) px, scaled.
        views: its fixed training views, in scaled pixels.
        boxes: YOLO rows (class, cx, cy, w, h as fractions: scaling leaves them as they
            are), or None.
        sigma: the centre Gaussian's sigma as a share of the box size.
    """

    sample: Sample
    source_key: str
    factor: float
    size: tuple[int, int]
    views: list[View]
    boxes: np.ndarray | None
    sigma: float

    @property
    def key(self) -> str:
        """What its scaled pixels and their features are cached under."""
        return scaled_key(self.source_key, self.factor)

    def pixels(self, store: ImageStore) -> tuple[np.ndarray, np.ndarray]:
        """Its (H, W, 3) uint8 image and (H, W) bool mask, scaled."""
        return store.load(self.sample, self.source_key, self.factor)

    def centres(self, view: View) -> np.ndarray:
        """The centre-map target of a view of this image."""
        return centre_map(yolo_to_cxcywh(self.boxes, *self.size), view.y, view.x, view.h, view.w,
                          self.sigma)


Item = tuple[TrainImage, View, int, int]
"""(image, view, dihedral variant, colour-jitter seed): one example of an epoch."""


def item_seed(*parts: object) -> int:
    """A stable 63-bit seed from anything printable (Python's hash() varies per process)."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:15], 16)


def read_images(cfg: TrainConfig, store: ImageStore, progress: bool = False
                ) -> dict[str, TrainImage]:
    """Every labelled image of ``cfg.data``'s train split, decoded into ``store``, with its
    boxes and its fixed training views, by stem.

    Sets ``cfg.cell_diameter`` where it is None: the median diameter of the images' whole
    cells (:func:`bloomseg.data.dataset.cell_diameters`, pooled). With
    ``cfg.common_size``, each image is scaled so that its cells are at that diameter: by
    the median of its own whole boxes, else by its dataset's median; masks, boxes and
    centre targets with it, and its views are cut from the scaled image.

    Raises:
        DataError: orphans, or files that cannot be used (every one named).
    """
    from tqdm import tqdm

    scan = scan_split(cfg.data, "train")
    if scan.problems():
        raise DataError(f"{Path(cfg.data) / 'train'}: {scan.problems()} (every image "
                        "needs a mask <stem>.png in mask/, and every mask an image)")
    by_stem = {s.stem: s for s in scan.samples}
    images, errors = {}, []
    for stem in tqdm(sorted(by_stem), desc="reading images", unit="image",
                     disable=not progress, leave=False):
        sample = by_stem[stem]
        try:
            key = content_key(sample)
            image, _ = store.load(sample, key)
            boxes = read_boxes(sample.boxes) if sample.boxes is not None else None
        except BloomsegError as e:
            errors.append(str(e))
            continue
        images[stem] = TrainImage(sample, key, 1.0, image.shape[:2], [], boxes, cfg.centre_sigma)
    if errors:
        raise DataError(f"{len(errors)} training file(s) cannot be used:\n  " + "\n  ".join(errors))
    # each image's whole cells: from its boxes, else its mask's components
    diameters = {stem: cell_diameters(img.boxes, None if img.boxes is not None
                                      else np.asarray(img.pixels(store)[1]), img.size)
                 for stem, img in images.items()}
    dataset = pooled_median(list(diameters.values()))
    if cfg.cell_diameter is None:  # the scale the model learns cells at
        cfg.cell_diameter = dataset
    for stem, img in images.items():
        if cfg.common_size and cfg.cell_diameter is not None:
            own = diameters[stem] if img.boxes is not None else []
            diameter = float(np.median(own)) if len(own) else dataset
            if diameter:
                img.factor = round(cfg.cell_diameter / diameter, 5)
                img.size = img.pixels(store)[0].shape[:2]
        rng = np.random.default_rng(item_seed(cfg.seed, img.key, "views"))
        img.views = training_views(*img.size, cfg.mode, cfg.tile, cfg.tiles_per_image, rng)
    return images


def render_example(cfg: TrainConfig, store: ImageStore, jitter: ColourJitter | None,
                   item: Item) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The network input, mask and centre target (None: the image has no boxes) of one
    item: its view in its flip/rotation variant, colour-jittered with its seed."""
    img, view, k, jitter_seed = item
    image, mask = img.pixels(store)
    rgb = dihedral(render(image, view, cfg.mode, cfg.tile), k)
    label = dihedral(render(mask, view, cfg.mode, cfg.tile), k)
    centres = None
    if cfg.centres and img.boxes is not None:
        local = View(view.name, 0, 0, view.h, view.w)
        centres = dihedral(render(img.centres(view), local, cfg.mode, cfg.tile), k)
    if jitter is not None:
        rgb = jitter(rgb, np.random.default_rng(jitter_seed))
    return rgb, label, centres


def epoch_items(cfg: TrainConfig, images: list[TrainImage], epoch: int, cached: bool
                ) -> list[Item]:
    """This epoch's items, in training order.

    Args:
        cfg: the run's settings.
        images: the training images.
        epoch: 1-based; with the seed it seeds every draw.
        cached: features are cached, so each image keeps its fixed views and each
            variant its one colour draw (otherwise tiles are fresh crops each epoch).
    """
    rng = np.random.default_rng([cfg.seed, epoch])
    variants = cfg.variants()
    items = []
    for img in images:
        if not cached and cfg.mode == "tiling":  # nothing to reuse: fresh crops
            views = [random_view(*img.size, cfg.tile, rng) for _ in range(cfg.tiles_per_image)]
        else:
            views = img.views
        for view in views:
            k = int(rng.choice(variants))
            seed = item_seed(cfg.seed, img.key, view.name, k) if cached else int(rng.integers(2**63))
            items.append((img, view, k, seed))
    return [items[i] for i in rng.permutation(len(items))]
