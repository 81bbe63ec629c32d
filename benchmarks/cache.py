"""Seconds per training epoch with and without the feature cache, side by side.

    python benchmarks/cache.py [--images 10] [--epochs 4]

A frozen DinoBloom-S (random weights: the speed does not depend on their values) under
each head, on the first ``--images`` real training smears (linked into a temporary
dataset). For each head, in one process:

- uncached: ``cache=False``, the backbone runs on every tile of every epoch;
- cached: a fresh cache; epoch 1 fills it, later epochs read it. Flips and rotations are
  off so that epoch 1 caches every item the later epochs use (with them on, each
  position has 8 variants and the cache fills over the first epochs instead).

Reports the median seconds of the uncached epochs, of the cached epochs 2.., and their
ratio, plus the backbone tiles each epoch ran.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from bloomseg.backbone.vit import ARCHS, DinoVisionTransformer
from bloomseg.train.config import TrainConfig
from bloomseg.train.run import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc041seg"


def subset(folder: Path, n: int) -> Path:
    for sub in ("original", "mask"):
        (folder / "train" / sub).mkdir(parents=True)
        for path in sorted((DATA / "train" / sub).iterdir())[:n]:
            (folder / "train" / sub / path.name).symlink_to(path)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--heads", nargs="+", default=["linear", "fusion", "transposed_conv"])
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = DinoVisionTransformer(ARCHS["vit_small"]).eval().requires_grad_(False)
    print(f"{args.images} images ({args.images - round(args.images * 0.2)} train, "
          f"{round(args.images * 0.2)} val), 8 tiles of 224 per train image, batch 8, "
          f"{torch.get_num_threads()} threads")
    print(f"{'head':<16} {'uncached s/epoch':>16} {'cached s/epoch':>15} {'ratio':>7}  "
          "backbone tiles per epoch (uncached | cached)")
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(Path(tmp) / "data", args.images)
        for head in args.heads:
            runs = {}
            for cached in (False, True):
                cfg = TrainConfig(data=str(data), out=f"{tmp}/{head}-{cached}", head=head,
                                  epochs=args.epochs if cached else 2, cache=cached,
                                  cache_dir=f"{tmp}/cache", flips=False, rotations=False,
                                  early_stopping=0)
                runs[cached] = train(cfg, backbone=backbone, progress=False).history
            slow = statistics.median(r["seconds"] for r in runs[False])
            fast = statistics.median(r["seconds"] for r in runs[True][1:])
            tiles = (f"{[r['backbone_tiles'] for r in runs[False]]} | "
                     f"{[r['backbone_tiles'] for r in runs[True]]}")
            print(f"{head:<16} {slow:>16.2f} {fast:>15.2f} {slow / fast:>6.1f}x  {tiles}",
                  flush=True)


if __name__ == "__main__":
    main()
