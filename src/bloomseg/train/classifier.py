"""Training the cell classifier on the cells a segmentation model finds.

The cells are the segmentation model's own, as ``predict --instances`` gives them (at
the image's estimated cell diameter), so the classifier learns on the cells it will be
shown; each is named by the true box it matches one to one at IoU >= 0.5 (cells matching
no box are left out: their class is unknown). Each training image is also seen through
``views`` other microscopes (:class:`~bloomseg.train.augment.Microscope`: stain, contrast,
tint, blur, noise, JPEG, cell size), normalised as the model normalises.

Every epoch draws the same number of windows of each class (infected cells are about 3%
of red cells); a red cell of a dataset whose ``classes.txt`` names no infections teaches
"red or infected" (:func:`~bloomseg.data.vocabulary.allowed_classes`). The epoch with the
best balanced recall on the validation cells is kept, and the infected-cell threshold is
then tuned on them for recall (:func:`tune_infected`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bloomseg.cells.matching import box_pairs, cell_boxes
from bloomseg.data.boxes import read_boxes, yolo_to_xyxy
from bloomseg.data.dataset import has_split, load_or_make_splits, scan_split
from bloomseg.data.images import read_image
from bloomseg.data.vocabulary import CLASSES, STAGES, allowed_classes, read_classes
from bloomseg.errors import ConfigError, DataError
from bloomseg.model.classifier import (
    CellClassifier,
    ClassifierConfig,
    cell_windows,
    to_window_scale,
    window_scale,
)
from bloomseg.model.inputs import normalise
from bloomseg.train.config import ClassesConfig

STAGE_INDEX = [CLASSES.index(s) for s in STAGES]
WINDOWS_FILE = "windows.npz"
"""The run's cell windows, cut once (the segmentation of every image is the slow part)."""


@dataclass
class Windows:
    """Cell windows with their classes.

    Attributes:
        x: (N, 4, crop, crop) uint8 (RGB 0..255, mask 0/1).
        y: (N,) int64 index into CLASSES.
        known: (N, len(CLASSES)) bool: the classes the cell's dataset names.
        dataset: (N,) int: which ``--data`` root.
        view: (N,) int: 0 the image itself, 1.. an augmented view.
    """

    x: np.ndarray
    y: np.ndarray
    known: np.ndarray
    dataset: np.ndarray
    view: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @staticmethod
    def join(parts: list[Windows], crop: int) -> Windows:
        if not parts:
            return Windows(np.zeros((0, 4, crop, crop), np.uint8), np.zeros(0, np.int64),
                           np.zeros((0, len(CLASSES)), bool), np.zeros(0, int), np.zeros(0, int))
        return Windows(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                         ("x", "y", "known", "dataset", "view")))


def split_images(root: str, cfg: ClassesConfig) -> tuple[list, list]:
    """(train samples, validation samples) of a root with boxes: ``ROOT/val`` where it
    exists, else the held-out stems of its ``splits.json``."""
    train = [s for s in scan_split(root, "train", need_mask=False).samples if s.boxes]
    if has_split(root, "val"):
        return train, [s for s in scan_split(root, "val", need_mask=False).samples if s.boxes]
    # a read-only root's new split goes to the run folder, one file per root
    fallback = Path(cfg.out) / (f"splits-{Path(root).name}.json" if len(cfg.data) > 1
                                else "splits.json")
    splits, _ = load_or_make_splits(root, [s.stem for s in train], fallback, cfg.seed,
                                    cfg.val_fraction)
    held = set(splits["val"])
    return [s for s in train if s.stem not in held], [s for s in train if s.stem in held]


def image_windows(segmenter, image: np.ndarray, boxes: np.ndarray, targets: np.ndarray,
                  config: ClassifierConfig, views: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The windows of an image's cells that match a true box, in the image and in
    ``views`` augmented views.

    Args:
        segmenter: a :class:`~bloomseg.inference.segmenter.Segmenter`.
        image: (H, W, 3) uint8.
        boxes: (M, 4) x0, y0, x1, y1 true boxes; targets: (M,) their class indices.
        config: the classifier's crop and window.
        views: augmented views besides the image.
        rng: draws the views.

    Returns:
        (windows (K, 4, crop, crop) uint8, classes (K,), view numbers (K,)).
    """
    from bloomseg.train.augment import AUGMENTATIONS, Microscope

    prediction = segmenter.predict(image, instances=True, classes=False)
    labels = prediction.labels
    diameter = prediction.diameter or segmenter.cell_diameter
    pairs = box_pairs(cell_boxes(labels)[0], boxes)
    if not pairs or diameter is None:
        return np.zeros((0, 4, config.crop, config.crop), np.uint8), np.zeros(0, np.int64), np.zeros(0, int)
    cells = np.array([c for c, _ in pairs])
    classes = targets[[b for _, b in pairs]]
    microscope = Microscope(AUGMENTATIONS)
    xs, ys, vs = [], [], []
    for view in range(views + 1):
        seen, size = image, diameter
        if view:
            draws = microscope.draw(rng, float(image.mean()) / 255)
            seen = Microscope.pixelwise(image, draws)
            size = diameter * draws.pop("scale", 1.0)
            if "blur" in draws:  # drawn in full-resolution px, applied at window scale
                draws["blur"] *= window_scale(config, size)
        normalised = normalise(seen, segmenter.normalise)
        small, small_labels = to_window_scale(normalised, labels, config, size)
        if view:
            small = Microscope.optics(small, draws)
        windows = cell_windows(small, small_labels, config)[cells]
        rgb = np.clip((windows[:, :3] + 0.5) * 255, 0, 255).round().astype(np.uint8)
        xs.append(np.concatenate([rgb, windows[:, 3:].astype(np.uint8)], axis=1))
        ys.append(classes)
        vs.append(np.full(len(cells), view))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(vs)


def collect(segmenter, cfg: ClassesConfig, config: ClassifierConfig, split: str,
            log, progress: bool = True) -> Windows:
    """Every matched cell's windows of one split (``train``: with augmented views) of
    every root."""
    from tqdm import tqdm

    parts = []
    rng = np.random.default_rng(cfg.seed)
    for d, root in enumerate(cfg.data):
        names = read_classes(root)
        train, val = split_images(root, cfg)
        samples = train if split == "train" else val
        found = np.zeros(len(CLASSES), int)
        for sample in tqdm(samples, desc=f"cells of {Path(root).name} {split}", unit="image",
                           disable=not progress, leave=False):
            image = read_image(sample.image)
            yolo = read_boxes(sample.boxes)
            targets = names.targets(yolo[:, 0])
            x, y, v = image_windows(segmenter, image, yolo_to_xyxy(yolo, *image.shape[:2]),
                                    targets, config, cfg.views if split == "train" else 0, rng)
            parts.append(Windows(x, y, np.repeat(names.known[None], len(y), axis=0),
                                 np.full(len(y), d), v))
            found += np.bincount(y[v == 0], minlength=len(CLASSES))
        log(f"{Path(root).name} {split}: {len(samples)} images, matched cells "
            + ", ".join(f"{c} {n}" for c, n in zip(CLASSES, found) if names.known[CLASSES.index(c)]))
    return Windows.join(parts, config.crop)


def batch_tensor(x: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
    """uint8 windows -> the classifier's float input; with ``rng``, each turned by a
    random one of the 8 flips and rotations."""
    t = torch.from_numpy(x).float()
    t[:, :3] = t[:, :3] / 255 - 0.5
    if rng is not None:
        for i, k in enumerate(rng.integers(0, 8, len(t))):
            v = t[i].rot90(int(k) % 4, dims=(1, 2))
            t[i] = v.flip(2) if k >= 4 else v
    return t


def masked_loss(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """The negative log of the probability that each cell is one of the classes its box
    allows (:func:`~bloomseg.data.vocabulary.allowed_classes`): a red cell of a dataset that
    does not label infections teaches "red or infected", neither one alone."""
    return (torch.logsumexp(logits, dim=1)
            - torch.logsumexp(logits.masked_fill(~allowed, -1e9), dim=1)).mean()


def balanced_draw(windows: Windows, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` window indices, the same number of each class present."""
    present = [c for c in range(len(CLASSES)) if (windows.y == c).any()]
    per = int(np.ceil(count / max(1, len(present))))
    chosen = [rng.choice(np.flatnonzero(windows.y == c), per) for c in present]
    return rng.permutation(np.concatenate(chosen))[:count]


def probabilities(model: CellClassifier, windows: Windows, batch: int = 256) -> np.ndarray:
    """(N, len(CLASSES)) softmax of the windows, as a user gets them (no class masked)."""
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(windows), batch):
            out.append(model(batch_tensor(windows.x[s:s + batch])).softmax(dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)


def balanced_recall(p: np.ndarray, y: np.ndarray) -> dict:
    """Recall of each kind present (red, infected, white, platelet: the calls a user
    gets, the stages' probabilities summed) and their mean. Stages are not scored apart:
    validation holds one or two cells of some of them."""
    from bloomseg.data.vocabulary import KINDS, kind_of

    kinds = np.stack([p[:, CLASSES.index("red_blood_cell")], p[:, STAGE_INDEX].sum(axis=1),
                      p[:, CLASSES.index("white_blood_cell")], p[:, CLASSES.index("platelet")]],
                     axis=1)
    decided = kinds.argmax(axis=1)
    truth = np.array([KINDS.index(kind_of(int(c))) for c in y], int)
    recalls = {KINDS[k]: float((decided[truth == k] == k).mean()) for k in range(len(KINDS))
               if (truth == k).any()}
    return {"balanced_recall": float(np.mean(list(recalls.values()))) if recalls else 0.0,
            **{f"recall_{k}": v for k, v in recalls.items()}}


def tune_infected(p: np.ndarray, y: np.ndarray, beta: float = 2.0
                  ) -> tuple[float, list[dict]]:
    """The infected threshold (on the stages' summed probability, see
    :func:`~bloomseg.cells.types.infected_calls`) with the best F-beta of infected against
    uninfected red cells on validation; of thresholds that tie, the middle one.

    Returns:
        (threshold, one row per threshold tried: cells called, precision, recall, F-beta);
        0.5 where validation holds no infected cell.
    """
    from bloomseg.cells.types import infected_calls

    red = np.isin(y, [CLASSES.index("red_blood_cell")] + STAGE_INDEX)
    truth = np.isin(y[red], STAGE_INDEX)
    rows = []
    for t in np.round(np.arange(0.05, 0.96, 0.05), 2):
        called = infected_calls(p[red], float(t))
        tp = int((called & truth).sum())
        precision = tp / called.sum() if called.sum() else 1.0
        recall = tp / truth.sum() if truth.sum() else 1.0
        f = ((1 + beta ** 2) * precision * recall / (beta ** 2 * precision + recall)
             if precision + recall else 0.0)
        rows.append({"threshold": float(t), "called": int(called.sum()), "infected": int(truth.sum()),
                     "precision": precision, "recall": recall, "f_beta": f})
    if not truth.any():
        return 0.5, rows
    best = max(r["f_beta"] for r in rows)
    tied = [r["threshold"] for r in rows if r["f_beta"] == best]
    return tied[(len(tied) - 1) // 2], rows


@dataclass
class ClassesResult:
    """A finished classifier run: its folder, best epoch, validation scores, threshold."""

    run_dir: Path
    best_epoch: int
    scores: dict
    infected_threshold: float


def train_classes(cfg: ClassesConfig, progress: bool = True, overwrite: bool = False,
                  resume: bool = False) -> ClassesResult:
    """Train a cell classifier on a segmentation model's cells; everything goes into the
    run folder ``cfg.out`` (config.json, train.log, windows.npz, history.csv, best.pt,
    last.pt, infected_tuning.csv, val_confusion.json).

    Args:
        cfg: the settings.
        progress: progress bars and per-epoch lines.
        overwrite: start afresh in a folder that holds a run.
        resume: continue the run in ``cfg.out`` from its last.pt (its windows reused).

    Raises:
        ConfigError, DataError, CheckpointError, OutputExistsError: before training starts.
    """
    from bloomseg.files import refuse_existing, save_csv, save_json
    from bloomseg.inference.segmenter import Segmenter
    from bloomseg.model.files import read_classifier_file, save_classifier

    cfg.check()
    run = Path(cfg.out)
    if not resume:
        refuse_existing([run / "best.pt", run / "last.pt", run / WINDOWS_FILE], overwrite)
    run.mkdir(parents=True, exist_ok=True)
    for root in cfg.data:
        read_classes(root)  # a bad classes.txt is refused before any work
    segmenter = Segmenter.load(cfg.model)
    if segmenter.cell_diameter is None:
        raise ConfigError(f"--model {cfg.model}: the model does not record its cell diameter; "
                          "its cells cannot be brought to one size for a classifier")
    config = ClassifierConfig(width=cfg.width)
    log_file = run / "train.log"

    def log(line: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
        with open(log_file, "a", encoding="utf-8") as f:
            f.write(stamped + "\n")
        if progress:
            print(stamped, flush=True)

    save_json(run / "config.json", {"classes": asdict(cfg), "classifier": config.as_dict(),
                                    "segmentation_model": str(cfg.model)})
    train, val = _windows(segmenter, cfg, config, run, log, progress, resume and not overwrite)
    if not len(train) or not len(val):
        raise DataError(f"no cells matched a true box in the {'train' if not len(train) else 'val'} "
                        f"images of {', '.join(cfg.data)}")
    torch.manual_seed(cfg.seed)
    model = CellClassifier(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, cfg.epochs)
    history: list[dict] = []
    if resume and (run / "last.pt").is_file():
        payload = read_classifier_file(run / "last.pt")
        model.load_state_dict(payload["state"])
        optimiser.load_state_dict(payload["optimiser"])
        schedule.load_state_dict(payload["schedule"])
        history = payload["history"]
        log(f"resuming after epoch {len(history)}")
    allowed = allowed_classes(train.y, train.known)
    rng = np.random.default_rng(cfg.seed + len(history))
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        if history and cfg.early_stopping and \
                epoch - 1 - _best(history)["epoch"] >= cfg.early_stopping:
            log(f"early stop: no better balanced recall for {cfg.early_stopping} epochs")
            break
        start, losses = time.perf_counter(), []
        model.train()
        order = balanced_draw(train, cfg.items_per_epoch, rng)
        for s in range(0, len(order), cfg.batch_size):
            chosen = order[s:s + cfg.batch_size]
            loss = masked_loss(model(batch_tensor(train.x[chosen], rng)),
                               torch.from_numpy(allowed[chosen]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        schedule.step()
        scores = balanced_recall(probabilities(model, val), val.y)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), **scores,
                        "lr": optimiser.param_groups[0]["lr"],
                        "seconds": round(time.perf_counter() - start, 1)})
        log(f"epoch {epoch}/{cfg.epochs}: train loss {history[-1]['train_loss']:.4f}, val "
            + ", ".join(f"{k.removeprefix('recall_')} {v:.3f}" for k, v in scores.items()))
        info = {"config": config.as_dict(), "history": history}
        if _best(history)["epoch"] == epoch:
            save_classifier(run / "best.pt", model, info)
        save_classifier(run / "last.pt", model, info | {
            "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict()})
        save_csv(run / "history.csv", history, list(dict.fromkeys(k for r in history for k in r)))
    best = _best(history)
    payload = read_classifier_file(run / "best.pt")
    model.load_state_dict(payload["state"])
    p = probabilities(model, val)
    threshold, rows = tune_infected(p, val.y, cfg.recall_weight)
    save_csv(run / "infected_tuning.csv", rows, list(rows[0]))
    chosen = next(r for r in rows if r["threshold"] == threshold)
    log(f"infected threshold {threshold}: val infected recall {chosen['recall']:.3f}, precision "
        f"{chosen['precision']:.3f} ({chosen['infected']} infected cells; F{cfg.recall_weight:g})")
    config = ClassifierConfig(**{**config.as_dict(), "classes": CLASSES,
                                 "infected_threshold": threshold})
    model.config = config
    save_classifier(run / "best.pt", model, {"config": config.as_dict(), "history": history})
    confusion = np.zeros((len(CLASSES), len(CLASSES)), int)
    np.add.at(confusion, (val.y, p.argmax(axis=1)), 1)
    save_json(run / "val_confusion.json", {"classes": list(CLASSES), "rows_true_columns_predicted":
                                           confusion.tolist()})
    log(f"done: best balanced recall {best['balanced_recall']:.4f} at epoch {best['epoch']} "
        f"-> {run / 'best.pt'}")
    return ClassesResult(run, best["epoch"], {k: v for k, v in best.items()
                                              if k.startswith(("recall", "balanced"))}, threshold)


def _best(history: list[dict]) -> dict:
    return max(history, key=lambda r: r["balanced_recall"])


def _windows(segmenter, cfg: ClassesConfig, config: ClassifierConfig, run: Path, log,
             progress: bool, reuse: bool) -> tuple[Windows, Windows]:
    """The train and validation windows: cut from the data, or read back from the run's
    windows.npz when resuming."""
    from bloomseg.files import atomic_output

    path = run / WINDOWS_FILE
    fields = ("x", "y", "known", "dataset", "view")
    if reuse and path.is_file():
        with np.load(path) as saved:
            return tuple(Windows(*(saved[f"{split}_{f}"] for f in fields))
                         for split in ("train", "val"))
    train = collect(segmenter, cfg, config, "train", log, progress)
    val = collect(segmenter, cfg, config, "val", log, progress)
    with atomic_output(path) as f:
        np.savez(f, **{f"{split}_{f}": getattr(w, f) for split, w in
                       (("train", train), ("val", val)) for f in fields})
    log(f"windows: {len(train)} train (with {cfg.views} augmented views per image), "
        f"{len(val)} val -> {path}")
    return train, val
