"""The ``bloomseg`` command line: a thin layer over the Python API.

Exit codes: 0 all done, 1 failed, 2 bad command line, 3 done but some inputs skipped.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path
from typing import Sequence

from bloomseg import __version__
from bloomseg.errors import BloomsegError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, in order.

    A path that does not exist is kept, so the caller reports it like any bad input.
    """
    from bloomseg.io import IMAGE_SUFFIXES

    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif not path.exists() and glob.has_magic(item):
            found += sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def _cmd_weights_list(args: argparse.Namespace) -> int:
    import torch

    from bloomseg.vit import ARCHS, DinoVisionTransformer
    from bloomseg.weights import REGISTRY, cached_path

    print(f"{'name':<12} {'arch':<11} {'params':>8} {'dim':>5}  status")
    for entry in REGISTRY.values():
        cfg = ARCHS[entry.arch].with_grid(entry.grid)
        with torch.device("meta"):
            params = sum(p.numel() for p in DinoVisionTransformer(cfg).parameters())
        path = cached_path(entry.name)
        status = f"cached: {path}" if path.is_file() else "not cached"
        print(f"{entry.name:<12} {cfg.name:<11} {params / 1e6:>7.1f}M {cfg.embed_dim:>5}  {status}")
    return EXIT_OK


def _cmd_weights_download(args: argparse.Namespace) -> int:
    from bloomseg.weights import download

    path = download(args.name, args.dest)
    print(path)
    return EXIT_OK


def _cmd_weights_check(args: argparse.Namespace) -> int:
    from bloomseg.checkpoint import load_vit
    from bloomseg.weights import REGISTRY, sha256sum

    _, info = load_vit(args.path)
    digest = sha256sum(args.path)
    cfg = info.config
    known = [e.name for e in REGISTRY.values() if e.sha256 == digest]
    print(f"file:      {info.path} ({info.path.stat().st_size / 2**20:.1f} MiB)")
    print(f"format:    {info.format}, {info.layout} layout")
    print(f"model:     {cfg.name}/14, width {cfg.embed_dim}, depth {cfg.depth}, "
          f"{cfg.num_heads} heads, {cfg.ffn} feed-forward")
    print(f"params:    {info.num_params:,}")
    print(f"pos grid:  {cfg.grid}x{cfg.grid} ({cfg.grid * 14} px)")
    print(f"sha256:    {digest}" + (f" (published checksum of {known[0]})" if known else ""))
    print("status:    ok, loads strictly, all weights finite")
    return EXIT_OK


def _cmd_features(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from bloomseg.backbone import load_backbone
    from bloomseg.features import extract_features, pca_figure
    from bloomseg.io import atomic_output, read_image

    backbone = load_backbone(args.backbone, args.weights)
    paths = expand_inputs(args.inputs)
    if not paths:
        print("error: no input images found", file=sys.stderr)
        return EXIT_FAILED
    out = Path(args.output)
    skipped = 0
    for path in tqdm(paths, desc="features", unit="image", disable=args.quiet):
        npy, png = out / f"{path.stem}_features.npy", out / f"{path.stem}_pca.png"
        if not args.overwrite and (npy.exists() or png.exists()):
            tqdm.write(f"skipped {path}: {npy.name} exists (use --overwrite)")
            skipped += 1
            continue
        try:
            image = read_image(path)
        except BloomsegError as e:
            tqdm.write(f"skipped {e}")
            skipped += 1
            continue
        start = time.perf_counter()
        features = extract_features(backbone, image, tile=args.tile, batch_size=args.batch_size)
        with atomic_output(npy) as f:
            np.save(f, features)
        with atomic_output(png) as f:
            Image.fromarray(pca_figure(image, features)).save(f, format="PNG")
        if not args.quiet:
            tqdm.write(f"{path.name}: {features.shape} features in "
                       f"{time.perf_counter() - start:.1f} s -> {npy}")
    return EXIT_SKIPPED if skipped else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``bloomseg`` command."""
    parser = argparse.ArgumentParser(
        prog="bloomseg", description="Blood-smear cell segmentation on DinoBloom features.")
    parser.add_argument("--version", action="version", version=f"bloomseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    weights = commands.add_parser("weights", help="list, download and check backbone weights")
    wsub = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    wsub.add_parser("list", help="known backbones and whether they are cached"
                    ).set_defaults(func=_cmd_weights_list)
    dl = wsub.add_parser("download", help="download weights into the cache ($BLOOMSEG_HOME)")
    dl.add_argument("name", help="registry name, e.g. dinobloom-s")
    dl.add_argument("--dest", help="folder to put the file in (default: the cache)")
    dl.set_defaults(func=_cmd_weights_download)
    check = wsub.add_parser("check", help="report format, size, parameters and sha256 of a file")
    check.add_argument("path", help="weights file (.pth or .safetensors)")
    check.set_defaults(func=_cmd_weights_check)

    feats = commands.add_parser(
        "features", help="DinoBloom patch features and a PCA picture per image")
    feats.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    feats.add_argument("-o", "--output", required=True, help="output folder")
    model = feats.add_argument_group("backbone")
    model.add_argument("--backbone", default="dinobloom-s", help="registry name (default: %(default)s)")
    model.add_argument("--weights", help="weights file (default: the cached download)")
    run = feats.add_argument_group("run")
    run.add_argument("--tile", type=int, default=224, help="tile side, multiple of 14 (default: 224)")
    run.add_argument("--batch-size", type=int, default=8, help="tiles per backbone call (default: 8)")
    run.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    feats.set_defaults(func=_cmd_features)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BloomsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
