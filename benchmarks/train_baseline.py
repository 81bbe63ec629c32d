"""Train a model on the real smears and score it on their test split, beside Otsu.

    python benchmarks/train_baseline.py --out out/unet-baseline              # the U-Net
    python benchmarks/train_baseline.py --out out/fusion --backbone dinobloom-s

Trains with ``bloomseg.train`` on ../shared/data/bbbc041seg/train (its 80/20 split), then
reports pixel Dice and IoU over the 10 test images of best.pt and, measured in the same
run, of a classical pipeline: Otsu's threshold on the green channel (cells are darker
than the background), which needs no training.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bloomseg.data.dataset import load_sample, scan_split
from bloomseg.evaluation.pixels import PixelCounts
from bloomseg.inference.segmenter import Segmenter
from bloomseg.train.config import TrainConfig
from bloomseg.train.run import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc041seg"


def otsu_mask(image: np.ndarray) -> np.ndarray:
    """Cells as the darker class of Otsu's threshold on the green channel."""
    green = image[..., 1]
    hist = np.bincount(green.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256)
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * levels)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    threshold = int(np.argmax(w0 * w1 * (mean0 - mean1) ** 2))
    return green <= threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--backbone", default="unet")
    parser.add_argument("--head", default=None)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tiles-per-image", type=int, default=8)
    parser.add_argument("--eval-only", action="store_true", help="score an existing run")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if not args.eval_only:
        start = time.perf_counter()
        result = train(TrainConfig(data=args.data, out=args.out, backbone=args.backbone,
                                   head=args.head, weights=args.weights, epochs=args.epochs,
                                   lr=args.lr, tiles_per_image=args.tiles_per_image))
        print(f"trained in {(time.perf_counter() - start) / 60:.1f} min; best val Dice "
              f"{result.best_dice:.4f} at epoch {result.best_epoch}")
    segmenter = Segmenter.load(args.out, diameter="model")
    payload = torch.load(Path(args.out) / "best.pt", weights_only=True)
    ours, otsu = PixelCounts(), PixelCounts()
    for sample in scan_split(args.data, "test").samples:
        image, mask = load_sample(sample)
        ours = ours + PixelCounts.of(segmenter.predict(image).mask, mask)
        otsu = otsu + PixelCounts.of(otsu_mask(image), mask)
    print(f"test split ({args.data}):")
    print(f"  {payload['config']['backbone']}/{payload['config']['head']} best.pt "
          f"(epoch {payload['epoch']}): Dice {ours.dice:.4f}  IoU {ours.iou:.4f}")
    print(f"  Otsu threshold (green channel):      Dice {otsu.dice:.4f}  IoU {otsu.iou:.4f}")


if __name__ == "__main__":
    main()
