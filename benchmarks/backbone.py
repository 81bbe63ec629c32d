"""ViT-S/14 throughput at 224x224 on this machine, fp32, median of several runs.

    python benchmarks/backbone.py [--weights PATH] [--repeats 5]

Random weights cost the same as DinoBloom's, so no weights file is needed. For a ratio
measured side by side, the same model also runs with attention written as explicit
softmax(q k^T / sqrt(d)) v, the usual plain-PyTorch form, instead of
F.scaled_dot_product_attention.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from contextlib import contextmanager

import torch

from bloomseg.backbone.layouts import load_vit
from bloomseg.backbone.vit import ARCHS, Attention, DinoVisionTransformer


@contextmanager
def explicit_attention():
    """Temporarily replace SDPA by explicit attention maths in every Attention module."""

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1) @ v
        return self.proj(att.transpose(1, 2).reshape(b, n, c))

    original = Attention.forward
    Attention.forward = forward
    try:
        yield
    finally:
        Attention.forward = original


def tiles_per_second(model: torch.nn.Module, batch: int, repeats: int) -> list[float]:
    """Throughput of ``repeats`` timed forward passes (after one warm-up)."""
    x = torch.randn(batch, 3, 224, 224)
    rates = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            rates.append(batch / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="a ViT-S weights file (default: random weights)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    args = parser.parse_args()
    if args.weights:
        model = load_vit(args.weights)[0]
    else:
        model = DinoVisionTransformer(ARCHS["vit_small"]).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, "
          f"{model.cfg.name} at 224x224, {args.repeats} runs per batch size")
    for batch in args.batches:
        rates = tiles_per_second(model, batch, args.repeats)
        with explicit_attention():
            plain = tiles_per_second(model, batch, args.repeats)
        fast, slow = statistics.median(rates), statistics.median(plain)
        print(f"batch {batch:>3}: median {fast:5.2f} tiles/s (runs: "
              f"{', '.join(f'{r:.2f}' for r in rates)}); explicit attention {slow:5.2f} tiles/s; "
              f"ratio {fast / slow:.2f}")


if __name__ == "__main__":
    main()
