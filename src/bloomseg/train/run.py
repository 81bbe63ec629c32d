"""Training a segmentation head on frozen DinoBloom features (or a U-Net from scratch).

``train(TrainConfig(...))`` starts a run in ``config.out``; ``resume(run_dir)`` continues
one from its ``last.pt``. Every epoch draws its tiles, flips and colour changes from its
own seeded generator, so a resumed run repeats exactly what an uninterrupted one does.

With a frozen backbone each training tile has a fixed position, and each position
eight flip/rotation variants (each with its own fixed colour jitter draw): a finite set
whose features are computed once, stored in the feature cache, and read back in every
later epoch, so the backbone's cost fades out of training.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bloomseg import __version__
from bloomseg.backbone.registry import home
from bloomseg.backbone.vit import DinoVisionTransformer
from bloomseg.cells.instances import DEFAULT_CENTRES, DEFAULT_DISTANCE, InstanceParams, separate
from bloomseg.cells.matching import match_boxes, total_boxes
from bloomseg.data.boxes import yolo_to_xyxy
from bloomseg.errors import CheckpointError, ConfigError
from bloomseg.evaluation.pixels import PixelCounts
from bloomseg.files import refuse_existing, remove_stale_temporaries, save_json, sha256sum
from bloomseg.inference.logits import predict_logits
from bloomseg.inference.options import InferenceOptions
from bloomseg.inference.scale import read_size
from bloomseg.model.config import LEGACY
from bloomseg.model.files import (
    check_written_by,
    module_fingerprint,
    read_checkpoint_file,
    resolve_model,
    save_checkpoint,
    trainable_state,
)
from bloomseg.model.inputs import View, normalise, to_tensor
from bloomseg.model.network import SegmentationModel
from bloomseg.train.augment import ColourJitter, Microscope
from bloomseg.train.cache import FeatureCache, ImageStore
from bloomseg.train.config import (
    ADAPT_MARGIN,
    ADAPT_MARGIN_CELLS,
    RUN_FILES,
    TrainConfig,
    TrainResult,
)
from bloomseg.train.examples import (
    Dataset,
    Example,
    TrainImage,
    epoch_items,
    items_per_dataset,
    read_datasets,
    render_example,
    whole_box_target,
)
from bloomseg.train.history import plot_curves, score_of, write_history
from bloomseg.train.losses import SegmentationLoss, box_loss
from bloomseg.train.tuning import choose_separation

Listener = Callable[[int, int], None]
"""Called after every optimiser step with (steps done, steps in the run); raising
KeyboardInterrupt in it stops the run as Ctrl-C does (napari's Cancel)."""

SIZE_IMAGES = 16
"""Validation images per dataset the size head is scored on each epoch."""
SIZE_TRIALS = (0.6, 1.0, 1.6)
"""The scales (times the cells' size) the size head is scored at in validation."""


def _bar(**kwargs):
    from tqdm import tqdm

    return tqdm(**kwargs)


class _Log:
    """Lines to train.log (always) and to the terminal (unless quiet), above tqdm bars."""

    def __init__(self, path: Path, echo: bool) -> None:
        self.path, self.echo = path, echo

    def __call__(self, message: str) -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{stamp} {message}\n")
        if self.echo:
            from tqdm import tqdm

            tqdm.write(message)


def _versions() -> dict:
    import PIL

    return {"bloomseg": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
            "platform": platform.platform()}


class _Run:
    """One training run: data, model, cache and the epoch loop."""

    def __init__(self, config: TrainConfig, run_dir: Path, backbone: DinoVisionTransformer | None,
                 progress: bool, resuming: bool, listener: Listener | None = None) -> None:
        self.cfg, self.run_dir, self.progress, self.listener = config, run_dir, progress, listener
        self.datasets = self._read_data()
        self.train_images = [img for d in self.datasets for img in d.train]
        self.val_images = [img for d in self.datasets for img in d.val]
        self.weights_sha256 = None
        if config.backbone != "unet" and backbone is None:
            from bloomseg.backbone import load_backbone, resolve_weights

            weights = resolve_weights(config.backbone, config.weights)
            config.weights = str(weights.resolve())
            self.weights_sha256 = sha256sum(weights)
            backbone = load_backbone(config.backbone, weights)
        self.fingerprint = module_fingerprint(backbone) if backbone is not None else None
        torch.manual_seed(config.seed)
        self.model = SegmentationModel(config.head, backbone, out_channels=2 if config.centres else 1,
                                       unfreeze_blocks=config.unfreeze_blocks,
                                       unet_levels=config.unet_levels, size_head=config.size_head)
        self.model.freeze(config.freeze)
        self.criterion = SegmentationLoss(config.loss, config.bce_weight, config.dice_weight)
        groups = self.model.parameter_groups(config.lr)
        self.base_lrs = [g["lr"] for g in groups]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        self.jitter = ColourJitter(hue=config.hue_jitter) if config.colour_jitter else None
        self.microscope = (Microscope(tuple(config.augment), config.scale_range)
                           if config.augment else None)
        frozen = backbone is not None and config.unfreeze_blocks == 0
        self.cache = None
        if frozen and config.cache:
            identity = {"backbone": self.fingerprint, "layers": self.model.layers,
                        "jitter": asdict(self.jitter) | {"seed": config.seed} if self.jitter
                        else None}
            if config.augment or config.normalise != "none":  # what older caches lack
                identity |= {"augment": config.augment, "normalise": config.normalise,
                             "seed": config.seed}
            self.cache = FeatureCache(Path(config.cache_dir) / "features", identity)
        self.inference = InferenceOptions(config.mode, config.tile, batch_size=config.batch_size)
        self.val_separation = self._val_separation()
        self.backbone_tiles = 0
        self.history: list[dict] = []
        if config.init is not None and not resuming:
            self._start_from(config.init)
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir, RUN_FILES)  # what a killed run was writing
        self.log = _Log(run_dir / "train.log", progress)
        if not resuming:  # a fresh start (in a used folder only with overwrite)
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
            self._write_config()

    def _start_from(self, name: str) -> None:
        """Load the trained weights of model ``name`` (see :func:`resolve_model`) into the
        fresh model: fine-tuning instead of a start from random weights."""
        path = resolve_model(name)
        payload = read_checkpoint_file(path)
        theirs = payload.get("config", {})
        differ = [f"{key} {theirs.get(key)!r} there, {getattr(self.cfg, key)!r} here"
                  for key in ("backbone", "head", "unet_levels", "centres")
                  if key in theirs and theirs[key] != getattr(self.cfg, key)]
        if differ:  # centres: False here when the data has no boxes
            raise ConfigError(f"--init {path}: a model of other settings ({'; '.join(differ)})")
        if payload.get("backbone_fingerprint") != self.fingerprint:
            raise ConfigError(f"--init {path}: trained on another backbone than "
                              f"{self.cfg.weights or self.cfg.backbone}")
        state, expected = payload["state"], set(trainable_state(self.model))
        if self.model.size_head is not None:  # a model without one: its size head starts new
            expected -= {n for n in expected if n.startswith("size_head.")} - set(state)
        try:
            if set(state) != expected:
                raise ValueError(f"{len(set(state) ^ expected)} tensor names differ")
            self.model.load_state_dict(state, strict=False)
        except (RuntimeError, ValueError) as e:
            raise ConfigError(f"--init {path}: its weights do not fit a {self.cfg.head} model "
                              f"with these settings ({str(e)[:300]})") from None

    # -- data ------------------------------------------------------------------------

    def _read_data(self) -> list[Dataset]:
        cfg = self.cfg
        self.store = ImageStore(Path(cfg.cache_dir) / "images", cfg.max_pixels)
        datasets = read_datasets(cfg, self.store, self.run_dir, self.progress)
        if cfg.centres and all(img.boxes is None for d in datasets for img in d.train + d.val):
            cfg.centres = False  # recorded in config.json: this run has no centre map
        if cfg.size_head and not cfg.sizes_drawn():
            cfg.size_head = False  # recorded in config.json: no known sizes to learn from
        return datasets

    # -- features --------------------------------------------------------------------

    def _features(self, keys: list[tuple[str, str, int]], x: Tensor) -> list[Tensor]:
        """Feature maps of the inputs ``x`` named by (image key, view name, variant);
        cached ones are read back, the others computed (and cached)."""
        stored = [self.cache.get(*key) if self.cache else None for key in keys]
        missing = [i for i, f in enumerate(stored) if f is None]
        if missing:
            with torch.no_grad():
                computed = torch.stack(self.model.features(x[missing]), dim=1).half().numpy()
            self.backbone_tiles += len(missing)
            for j, i in enumerate(missing):
                stored[i] = computed[j]
                if self.cache is not None:
                    self.cache.put(*keys[i], computed[j])
        stacked = torch.from_numpy(np.stack(stored)).float()  # (B, layers, D, h, w)
        return [stacked[:, i].contiguous() for i in range(stacked.shape[1])]

    # -- epochs ----------------------------------------------------------------------

    def _lr_factor(self, epoch: int) -> float:
        cfg = self.cfg
        if cfg.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
        if cfg.scheduler == "step":
            return cfg.step_gamma ** ((epoch - 1) // cfg.step_size)
        return 1.0

    def batches_per_epoch(self) -> int:
        """Optimiser steps of an epoch (one per batch; the run's progress counts them)."""
        items = sum(items_per_dataset(self.cfg, [d.train for d in self.datasets]))
        return -(-items // self.cfg.batch_size)

    def _train_epoch(self, epoch: int, bar) -> float:
        cfg, model = self.cfg, self.model
        model.train()
        items = epoch_items(cfg, [d.train for d in self.datasets], epoch, self.cache is not None)
        batches = [items[i:i + cfg.batch_size] for i in range(0, len(items), cfg.batch_size)]
        total, count = 0.0, 0
        bar.set_description(f"epoch {epoch}/{cfg.epochs}")
        for batch in batches:
            examples = [render_example(cfg, self.store, self.jitter, self.microscope, item)
                        for item in batch]
            # whole-image modes mix shapes: one optimiser step per shape
            for shape in dict.fromkeys(e.rgb.shape for e in examples):
                group = [(item, e) for item, e in zip(batch, examples) if e.rgb.shape == shape]
                loss = self._step([item for item, _ in group], [e for _, e in group])
                total += loss * len(group)
                count += len(group)
            bar.set_postfix(loss=f"{total / count:.4f}")
            bar.update()
            self.steps[0] += 1
            if self.listener is not None:
                self.listener(*self.steps)
        return total / count

    def _loss(self, logits: Tensor, examples: list[Example]) -> Tensor:
        """Mask loss (from the mask, or learned from the boxes), plus the weighted
        centre-map loss over the inputs that have boxes; each input weighs the same."""
        masked = [i for i, e in enumerate(examples) if e.mask is not None]
        boxed = [i for i, e in enumerate(examples) if e.mask is None]
        parts = []
        if masked:
            target = torch.from_numpy(np.stack([examples[i].mask for i in masked])).float()
            parts.append(len(masked) * self.criterion(logits[masked, :1], target.unsqueeze(1)))
        for i in boxed:
            parts.append(box_loss(logits[i, 0], examples[i].boxes, examples[i].rgb,
                                  self.cfg.pairwise_weight))
        loss = torch.stack(parts).sum() / len(examples)
        centred = [i for i, e in enumerate(examples) if e.centres is not None]
        if self.cfg.centres and centred:
            heat = torch.from_numpy(np.stack([examples[i].centres for i in centred])).unsqueeze(1)
            loss = loss + self.cfg.centre_weight * F.binary_cross_entropy_with_logits(
                logits[centred, 1:2], heat)
        return loss

    def _step(self, items: list, examples: list[Example]) -> float:
        cfg, model = self.cfg, self.model
        x = torch.cat([to_tensor(e.rgb) for e in examples])
        features = None
        if model.backbone is not None and not cfg.unfreeze_blocks:
            keys = [(img.key, view.name, k) for img, view, k, _ in items]
            features = self._features(keys, x)
        if model.size_head is not None:
            logits, size = model.forward_sized(x, features)
        else:
            logits = model(x) if features is None else model.forward_head(features, x)
        loss = self._loss(logits, examples)
        if model.size_head is not None:
            target = torch.tensor([e.size for e in examples], dtype=torch.float32)
            loss = loss + cfg.size_weight * F.mse_loss(size, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], cfg.grad_clip)
        self.optimizer.step()
        return float(loss.detach())

    def _predict(self, img: TrainImage) -> tuple[Tensor, np.ndarray | None, np.ndarray]:
        """A validation image's logits as ``predict`` makes them (cached features where
        there are), its true mask (None: boxes only) and the normalised image the model
        saw; for validation and tuning."""
        image, mask = img.pixels(self.store)
        seen = normalise(np.asarray(image), self.cfg.normalise)
        source = (lambda names, x: self._features([(img.key, n, 0) for n in names], x))
        logits = predict_logits(self.model, seen, self.inference, features=source)
        return logits, None if mask is None else np.asarray(mask), seen

    def _validate(self) -> dict:
        """Validation loss and scores: pixel Dice and IoU over the images with masks,
        cell F1 against the boxes of those without, and each dataset's score (its Dice,
        or its F1 where it has no masks); the run's score is their mean."""
        from tqdm import tqdm

        model = self.model
        model.eval()
        losses, by_dataset = [], {}
        with torch.no_grad():
            for d in self.datasets:
                counts, masked, matches, sizes = PixelCounts(), 0, [], []
                for i, img in enumerate(tqdm(d.val, desc=f"validation {d.name}", unit="image",
                                             disable=not self.progress, leave=False)):
                    logits, mask, seen = self._predict(img)
                    if model.size_head is not None and i < SIZE_IMAGES:
                        sizes += self._size_errors(seen)
                    centres = (img.centres(View("whole", 0, 0, *img.size))
                               if self.cfg.centres and img.boxes is not None else None)
                    target = None if mask is not None else whole_box_target(img)
                    example = Example(seen, mask, centres, target)
                    losses.append(float(self._loss(logits[None], [example])))
                    foreground = (logits[0] > 0).numpy()
                    if mask is not None:
                        counts, masked = counts + PixelCounts.of(foreground, mask), masked + 1
                    else:
                        centres = logits[1].sigmoid().numpy() if self.cfg.centres else None
                        labels, _ = separate(foreground, centres, self.val_separation)
                        matches.append(match_boxes(labels, yolo_to_xyxy(img.boxes, *img.size)))
                if d.val:
                    by_dataset[d.name] = {"dice": counts.dice if masked else None,
                                          "iou": counts.iou if masked else None,
                                          "f1": total_boxes(matches).f1 if matches else None}
                    if sizes:  # the typical error, as a share (0.1: 10% off)
                        by_dataset[d.name]["size_error"] = float(np.exp(np.median(sizes)) - 1)
        model.train()
        with_masks = [v for v in by_dataset.values() if v["dice"] is not None]
        scores = [v["dice"] if v["dice"] is not None else v["f1"] for v in by_dataset.values()]
        return {"val_loss": float(np.mean(losses)), "val_score": float(np.mean(scores)),
                "val_dice": float(np.mean([v["dice"] for v in with_masks])) if with_masks else None,
                "val_iou": float(np.mean([v["iou"] for v in with_masks])) if with_masks else None,
                "val_datasets": by_dataset}

    def _size_errors(self, seen: np.ndarray) -> list[float]:
        """|log(read / true)| of the size head on a validation image (normalised, at the
        run's cell size) seen at each of :data:`SIZE_TRIALS` times its cells' size."""
        return [abs(read_size(self.model, seen, f) - math.log(f)) for f in SIZE_TRIALS]

    def _val_separation(self) -> InstanceParams:
        """How cells of images without masks are separated for validation: the --init
        model's tuned settings, or the defaults."""
        inherited = self._init_instances()
        if inherited is not None and (inherited.method == "centres") == self.cfg.centres:
            return inherited
        return DEFAULT_CENTRES if self.cfg.centres else DEFAULT_DISTANCE

    # -- files -----------------------------------------------------------------------

    def _checkpoint_info(self, epoch: int) -> dict:
        return {"config": asdict(self.cfg), "epoch": epoch,
                "backbone_fingerprint": self.fingerprint, "weights_sha256": self.weights_sha256,
                "layers": self.model.layers, "history": self.history}

    def _write_config(self) -> None:
        cfg = self.cfg
        record = {
            "config": asdict(cfg),
            "backbone": {"name": cfg.backbone, "weights": cfg.weights,
                         "weights_sha256": self.weights_sha256,
                         "tensor_fingerprint": self.fingerprint, "layers": self.model.layers},
            "data": {"train_images": len(self.train_images), "val_images": len(self.val_images),
                     "datasets": [d.record(n, 1 / len(self.datasets)) for d, n in zip(
                         self.datasets, items_per_dataset(cfg, [d.train for d in self.datasets]))]},
            "feature_cache": str(self.cache.folder) if self.cache else None,
            "versions": _versions(),
            "command": sys.argv,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        save_json(self.run_dir / "config.json", record)

    def restore(self, path: Path) -> int:
        """Load last.pt into the model and optimiser; returns the epoch it ended."""
        payload = read_checkpoint_file(path)
        if payload.get("backbone_fingerprint") != self.fingerprint:
            raise ConfigError(f"{path}: the run was trained on other backbone weights than "
                              f"{self.cfg.weights or 'these'}")
        try:
            self.model.load_state_dict(payload["state"], strict=False)
            self.optimizer.load_state_dict(payload["optimizer"])
            self.history = list(payload["history"])
            return int(payload["epoch"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: does not fit the settings in "
                                  f"{self.run_dir / 'config.json'} ({type(e).__name__}: "
                                  f"{str(e)[:300]})") from None

    def _save(self, epoch: int, best: bool) -> None:
        info = self._checkpoint_info(epoch)
        # best.pt first: a run stopped between the two repeats the epoch on --resume and
        # writes the same best.pt again, but one stopped after last.pt alone would resume
        # past an epoch that best.pt never got
        if best:
            save_checkpoint(self.run_dir / "best.pt", self.model, info)
        save_checkpoint(self.run_dir / "last.pt", self.model,
                        info | {"optimizer": self.optimizer.state_dict()})

    # -- the loop --------------------------------------------------------------------

    def run(self, start_epoch: int) -> TrainResult:
        cfg = self.cfg
        self.started = time.perf_counter()
        self.log(f"{f'resuming after epoch {start_epoch}' if start_epoch else 'starting'}: "
                 f"{cfg.backbone}/{cfg.head}, mode {cfg.mode}, {len(self.train_images)} train / "
                 f"{len(self.val_images)} val images, run folder {self.run_dir}")
        if self.cache is not None:
            self.log(f"feature cache: {self.cache.folder}")
        stopped = False
        # one bar for the whole run: its rate gives the time left (validation aside)
        per_epoch = self.batches_per_epoch()
        self.steps = [per_epoch * start_epoch, per_epoch * cfg.epochs]  # done, in all
        bar = _bar(total=self.steps[1], initial=self.steps[0], unit="batch",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            if self._patience_spent():
                stopped = True
                break
            start = time.perf_counter()
            self.backbone_tiles = 0
            factor = self._lr_factor(epoch)
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base * factor
            train_loss = self._train_epoch(epoch, bar)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": None, "val_dice": None,
                   "val_iou": None, "lr": cfg.lr * factor}
            if self.val_images:
                row |= self._validate()
                scores = f"val loss {row['val_loss']:.4f}, {_scores(row)}"
            else:
                scores = "no validation"
            # without validation images the last epoch is the one kept
            best = (not self.history or not self.val_images
                    or score_of(row) > score_of(self._best()))
            row |= {"seconds": time.perf_counter() - start, "backbone_tiles": self.backbone_tiles}
            self.history.append(row)
            self._save(epoch, best)
            write_history(self.run_dir, self.history)
            plot_curves(self.history, self.run_dir / "training_curves.png",
                        f"{cfg.backbone} / {cfg.head}, {cfg.mode}")
            self.log(f"epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f}, {scores}, "
                     f"lr {row['lr']:.2e}, {row['seconds']:.1f} s, backbone on "
                     f"{self.backbone_tiles} tiles{' (best)' if best and self.val_images else ''}")
            if len(row.get("val_datasets", {})) > 1:
                for name, values in row["val_datasets"].items():
                    self.log(f"  val {name}: {_dataset_scores(values)}")
        bar.close()
        best_row = self._best()
        if stopped:
            self.log(f"early stop: no better val score for {cfg.early_stopping} epochs")
        self._tune_instances()
        if self.val_images:
            self.log(f"done: best {_scores(best_row)} at epoch {best_row['epoch']} -> "
                     f"{self.run_dir / 'best.pt'}")
        else:
            self.log(f"done: no validation images, the last epoch ({best_row['epoch']}) kept -> "
                     f"{self.run_dir / 'best.pt'}")
        model_dir = None
        if cfg.adapt:
            from bloomseg.train.adapted import write_adapted_model
            from bloomseg.train.corrected import adapt_classes

            classes = adapt_classes(cfg.init, cfg.data, self.run_dir, self.log, required=False)
            model_dir = write_adapted_model(self.run_dir, cfg, self.train_images,
                                            time.perf_counter() - self.started, classes)
            self.log(f"the adapted model and its MODEL_CARD.md: {model_dir}")
        return TrainResult(self.run_dir, best_row["epoch"], best_row["val_dice"],
                           self.history, stopped, score_of(best_row), model_dir)

    def _best(self) -> dict:
        """The history row of the epoch in best.pt: best val score, or the last epoch when
        nothing is held out."""
        if not self.val_images:
            return self.history[-1]
        return max(self.history, key=score_of)

    def _tune_instances(self) -> None:
        """Choose the cell-separation settings on the validation images' boxes with the
        best model, then the edge sliver size on their masks, and store them in best.pt
        (and instance_tuning.csv, edge_tuning.csv)."""
        from tqdm import tqdm

        path = self.run_dir / "best.pt"
        payload = read_checkpoint_file(path)
        self.model.load_state_dict(payload["state"], strict=False)
        self.model.eval()
        # a few-image fine-tune holds nothing out: its own images are what there is
        images = self.val_images or (self.train_images if self.cfg.adapt else [])
        if images is self.train_images:
            self.log(f"cell separation tuned on the {len(images)} training images (none held out)")
        cases = []  # (foreground, centres, true mask, boxes or None)
        with torch.no_grad():
            for img in tqdm(images, desc="tuning cell separation", unit="image",
                            disable=not self.progress, leave=False):
                logits, mask, _ = self._predict(img)
                centres = logits[1].sigmoid().numpy() if self.cfg.centres else None
                boxes = None if img.boxes is None else yolo_to_xyxy(img.boxes, *img.size)
                cases.append(((logits[0] > 0).numpy(), centres, mask, boxes))
        # a few images' tuning must beat the start model's settings to replace them
        boxed = sum(len(img.boxes) for img in images if img.boxes is not None)
        margin = max(ADAPT_MARGIN, ADAPT_MARGIN_CELLS / max(boxed, 1)) if self.cfg.adapt else 0.0
        inherited = self._init_instances() if not cases or margin else None
        params = choose_separation(cases, self.cfg.centres, inherited, self.run_dir, self.log,
                                   f"--init {self.cfg.init}",
                                   [img.dataset for img in images], self.cfg.cell_diameter,
                                   margin)
        info = {k: v for k, v in payload.items() if k not in ("kind", "bloomseg", "state")}
        save_checkpoint(path, self.model, info | {"instances": params.as_dict()})

    def _init_instances(self) -> InstanceParams | None:
        """The tuned cell-separation settings of the --init model, if it has any, at this
        run's cell diameter: what a final fit on every image (nothing left to tune on)
        keeps, and what validation separates cells with."""
        if self.cfg.init is None:
            return None
        payload = read_checkpoint_file(resolve_model(self.cfg.init))
        if not payload.get("instances"):
            return None
        params = InstanceParams.from_dict(payload["instances"])
        theirs = payload.get("config", {}).get("cell_diameter")
        if theirs and self.cfg.cell_diameter and theirs != self.cfg.cell_diameter:
            params = params.scaled(self.cfg.cell_diameter / theirs)  # at this run's cell size
        return params

    def _patience_spent(self) -> bool:
        if not self.cfg.early_stopping or not self.history or not self.val_images:
            return False
        return self.history[-1]["epoch"] - self._best()["epoch"] >= self.cfg.early_stopping


def _scores(row: dict) -> str:
    """A history row's validation scores as the log shows them: its one dataset's, or
    the mean score of several."""
    datasets = row.get("val_datasets") or {"": {"dice": row["val_dice"], "iou": row["val_iou"]}}
    if len(datasets) > 1:
        return f"val score {score_of(row):.4f} (the mean of {len(datasets)} datasets')"
    return f"val {_dataset_scores(next(iter(datasets.values())))}"


def _dataset_scores(values: dict) -> str:
    """One dataset's validation scores: Dice and IoU, or cell F1 where it has no masks."""
    if values.get("dice") is not None:
        return f"Dice {values['dice']:.4f}, IoU {values['iou']:.4f}"
    return f"cell F1 {values['f1']:.4f} against boxes (no masks)"


def _execute(run: _Run, start_epoch: int) -> TrainResult:
    try:
        return run.run(start_epoch)
    except KeyboardInterrupt:
        done = run.history[-1]["epoch"] if run.history else 0
        run.log(f"interrupted in epoch {done + 1}; last.pt holds epoch {done}. Continue with: "
                f"bloomseg train --resume {run.run_dir}")
        raise


def train(config: TrainConfig, backbone: DinoVisionTransformer | None = None,
          progress: bool = True, overwrite: bool = False,
          listener: Listener | None = None) -> TrainResult:
    """Train a model; everything goes into the run folder ``config.out``.

    Args:
        config: the settings; relative paths are resolved against the working folder.
        backbone: an already loaded backbone to use instead of ``config.backbone`` /
            ``config.weights`` (its tensors are fingerprinted for the cache and the
            checkpoints).
        progress: show progress bars and the per-epoch lines.
        overwrite: start afresh in a folder that holds a run (its files are replaced).
        listener: told of every step (:data:`Listener`), e.g. a progress bar elsewhere.

    Returns:
        The run folder, best epoch and Dice, and the history.

    Raises:
        BloomsegError: ConfigError, DataError, ImageError, WeightsError or
            OutputExistsError, before anything is written to the run folder, where the
            settings or the data allow it to be known then.
    """
    config = TrainConfig.from_dict(asdict(config))
    config.data = [str(Path(root).resolve()) for root in config.data]
    config.partial_boxes = [str(Path(root).resolve()) for root in config.partial_boxes]
    config.ignore_masks = [str(Path(root).resolve()) for root in config.ignore_masks]
    config.check()
    config.out = str(Path(config.out).resolve())
    config.cache_dir = str(Path(config.cache_dir or home() / "cache").resolve())
    if config.weights is not None:
        config.weights = str(Path(config.weights).resolve())
    if config.init is not None:  # recorded as the file it was, and refused before any writing
        config.init = str(resolve_model(config.init).resolve())
        config.inherit(read_checkpoint_file(Path(config.init)).get("config", {}))
        config.check()
    run_dir = Path(config.out)
    refuse_existing([run_dir / "config.json"], overwrite, f"{run_dir} holds a training run "
                    f"already; continue it with --resume {run_dir}, or pass --overwrite to "
                    "start again")
    return _execute(_Run(config, run_dir, backbone, progress, resuming=False, listener=listener),
                    0)


def resume(run_dir: str | Path, backbone: DinoVisionTransformer | None = None,
           progress: bool = True) -> TrainResult:
    """Continue a run from its last.pt with its own config.json (from the start if it
    stopped before its first epoch ended).

    The result equals that of the run never having stopped (same seed, same draws).
    """
    run_dir = Path(run_dir).resolve()
    config_path, last = run_dir / "config.json", run_dir / "last.pt"
    if not config_path.is_file():
        raise ConfigError(f"{run_dir}: no config.json here; not a bloomseg training run")
    try:
        record = json.loads(config_path.read_text("utf-8"))
        check_written_by(record.get("versions", {}).get("bloomseg"), config_path)
        recorded = record["config"]
        config = TrainConfig.from_dict(LEGACY | recorded)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"{config_path}: not a valid run configuration ({e})") from None
    config.out = str(run_dir)
    if not last.is_file():  # stopped before its first epoch ended: from the start
        return _execute(_Run(config, run_dir, backbone, progress, resuming=False), 0)
    run = _Run(config, run_dir, backbone, progress, resuming=True)
    return _execute(run, run.restore(last))
