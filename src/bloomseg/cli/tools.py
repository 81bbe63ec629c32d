"""``bloomseg weights``, ``features``, ``explore``, ``doctor`` and ``synthetic``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bloomseg.cli import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SKIPPED,
    EXIT_USAGE,
    add_output,
    add_run_flags,
    add_setting,
)
from bloomseg.data.synthetic import IMAGES, REAL_SCALE, write_example_dataset
from bloomseg.inference.options import InferenceOptions
from bloomseg.model.config import MODES, ModelConfig
from bloomseg.settings import COUNT, POSITIVE_INT, default_of
from bloomseg.tools.explore import SAMPLES, explore
from bloomseg.tools.features import GRID_IMAGES, save_comparison_grids


def _weights_list(args: argparse.Namespace) -> int:
    import torch

    from bloomseg.backbone.registry import REGISTRY, cached_path
    from bloomseg.backbone.vit import ARCHS, DinoVisionTransformer

    print(f"{'name':<12} {'arch':<11} {'params':>8} {'dim':>5}  status")
    for entry in REGISTRY.values():
        cfg = ARCHS[entry.arch].with_grid(entry.grid)
        with torch.device("meta"):
            params = sum(p.numel() for p in DinoVisionTransformer(cfg).parameters())
        path = cached_path(entry.name)
        status = f"cached: {path}" if path.is_file() else "not cached"
        print(f"{entry.name:<12} {cfg.name:<11} {params / 1e6:>7.1f}M {cfg.embed_dim:>5}  {status}")
    return EXIT_OK


def _weights_download(args: argparse.Namespace) -> int:
    from bloomseg.backbone.registry import download

    print(download(args.name, args.output))
    return EXIT_OK


def _weights_check(args: argparse.Namespace) -> int:
    from bloomseg.backbone.layouts import load_vit
    from bloomseg.backbone.registry import REGISTRY
    from bloomseg.files import sha256sum

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


def add_weights(commands: argparse._SubParsersAction) -> None:
    weights = commands.add_parser("weights", help="list, download and check backbone weights")
    actions = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    actions.add_parser("list", help="known backbones and whether they are cached"
                       ).set_defaults(func=_weights_list)
    download = actions.add_parser("download", help="download weights into the cache "
                                  "($BLOOMSEG_HOME)")
    download.add_argument("name", help="registry name, e.g. dinobloom-s")
    add_output(download, "folder to put the file in (default: the cache)", "--dest",
               required=False)
    download.set_defaults(func=_weights_download)
    check = actions.add_parser("check", help="report format, size, parameters and sha256 of a "
                               "file")
    check.add_argument("path", help="weights file (.pth or .safetensors)")
    check.set_defaults(func=_weights_check)


def _features(args: argparse.Namespace) -> int:
    from bloomseg.backbone import load_backbone
    from bloomseg.data.images import expand_inputs
    from bloomseg.tools.features import save_feature_maps

    names = args.backbone or [default_of(ModelConfig, "backbone")]
    weights = args.weights or [None] * len(names)
    problem = None
    if len(weights) != len(names):
        problem = (f"{len(names)} --backbone but {len(weights)} --weights; give one --weights "
                   "per --backbone, in the same order, or none")
    elif len(set(names)) < len(names):
        problem = "give each --backbone once"
    elif bool(args.data) == bool(args.inputs):
        problem = "give INPUT images, or --data DIR for the comparison grid"
    elif args.inputs and len(names) > 1:
        problem = "one --backbone per run on INPUT images (several: --data)"
    if problem:
        print(f"error: bloomseg features: {problem}", file=sys.stderr)
        return EXIT_USAGE
    # the settings of a prediction, checked as such before any backbone loads
    InferenceOptions(args.mode, args.tile, batch_size=args.batch_size, window=4 * args.tile).check()
    backbones = {name: load_backbone(name, w) for name, w in zip(names, weights)}
    if args.data:
        count = save_comparison_grids(backbones, args.data, args.output, args.split, args.images,
                                      args.tile, args.batch_size, args.overwrite, not args.quiet)
        print(f"{count} comparison grids, {len(backbones)} backbones x 3 modes -> {args.output}")
        return EXIT_OK
    paths = expand_inputs(args.inputs)
    if not paths:
        print("error: no input images found", file=sys.stderr)
        return EXIT_FAILED
    skipped = save_feature_maps(backbones[names[0]], paths, args.output, args.mode, args.tile,
                                args.batch_size, args.overwrite, not args.quiet)
    for line in skipped:
        print(f"skipped {line}")
    return EXIT_SKIPPED if skipped else EXIT_OK


def add_features(commands: argparse._SubParsersAction) -> None:
    feats = commands.add_parser(
        "features", help="backbone patch features as PCA pictures: per image, or the "
        "mode x backbone comparison grid (--data)",
        description="With INPUT images: <stem>_features.npy and <stem>_pca.png per image. "
        "With --data: for a few images of a split, one figure each comparing the resize, "
        "padding and tiling input modes (columns) for every --backbone (rows), plus "
        "feature_comparison.csv with the grid sizes and seconds.")
    feats.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or globs")
    add_output(feats)
    feats.add_argument("--data", help="dataset root: make the comparison grid instead")
    add_setting(feats, save_comparison_grids, "split", "--data split folder", "--split")
    add_setting(feats, save_comparison_grids, "images", "--data: images to compare, spread "
                "over the split", "--images", accepted=GRID_IMAGES)
    model = feats.add_argument_group("backbone")
    model.add_argument("--backbone", action="append",
                       help=f"registry name (default: {default_of(ModelConfig, 'backbone')}); "
                       "repeat with --data")
    model.add_argument("--weights", action="append",
                       help="weights file, one per --backbone (default: the cached download)")
    run = feats.add_argument_group("run")
    run.add_argument("--mode", choices=MODES, default=MODES[0],
                     help="INPUT images: how the backbone sees them (default: %(default)s)")
    add_setting(run, InferenceOptions, "tile", "tile side, a multiple of 14", "--tile")
    add_setting(run, InferenceOptions, "batch_size", "tiles per backbone call")
    add_run_flags(feats)
    feats.set_defaults(func=_features)


def _explore(args: argparse.Namespace) -> int:
    summary = explore(args.data, args.output, args.split, args.samples, args.min_area,
                      progress=not args.quiet, overwrite=args.overwrite)
    for split, s in summary["splits"].items():
        line = (f"{split}: {s['images']} images, cell fraction {s['cell_fraction']['mean']:.3f}, "
                f"{s['components_per_image']['mean']:.1f} mask components per image")
        if "boxes_per_image" in s:
            line += f", {s['boxes_per_image']['mean']:.1f} boxes per image"
        print(line)
    print(f"-> {Path(args.output) / 'summary.md'}")
    return EXIT_OK


def add_explore(commands: argparse._SubParsersAction) -> None:
    ex = commands.add_parser(
        "explore", help="sample grid, cell statistics and a summary of a labelled dataset")
    ex.add_argument("--data", required=True, help="dataset root (ROOT/SPLIT/original, mask, boxes)")
    add_output(ex)
    ex.add_argument("--split", action="append", help="split folder to describe; repeat for "
                    "several (default: all found)")
    add_setting(ex, explore, "samples", "images in the sample grid", "--samples", accepted=SAMPLES)
    add_setting(ex, explore, "min_area", "smaller mask components (px) are specks, not cells",
                accepted=POSITIVE_INT)
    add_run_flags(ex)
    ex.set_defaults(func=_explore)


def _doctor(args: argparse.Namespace) -> int:
    from bloomseg.tools.doctor import findings

    rows = findings()
    width = max(len(name) for name, _ in rows)
    for name, finding in rows:
        print(f"{name:<{width}}  {finding}")
    return EXIT_OK


def add_doctor(commands: argparse._SubParsersAction) -> None:
    commands.add_parser("doctor", help="versions, threads, cache, weights, models and data found"
                        ).set_defaults(func=_doctor)


def _synthetic(args: argparse.Namespace) -> int:
    write_example_dataset(args.output, args.n_train, args.n_test, args.seed, args.overwrite)
    print(f"{args.n_train} train and {args.n_test} test synthetic smears "
          f"({REAL_SCALE['size'][1]}x{REAL_SCALE['size'][0]}) -> {args.output}")
    return EXIT_OK


def add_synthetic(commands: argparse._SubParsersAction) -> None:
    syn = commands.add_parser("synthetic", help="a small dataset of synthetic smears (drawn "
                              "disks with masks and boxes) to try things on")
    add_output(syn, "dataset folder to write")
    add_setting(syn, write_example_dataset, "n_train", "train images", "--train", accepted=IMAGES)
    add_setting(syn, write_example_dataset, "n_test", "test images", "--test", accepted=IMAGES)
    add_setting(syn, write_example_dataset, "seed", "random seed", "--seed", accepted=COUNT)
    syn.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    syn.set_defaults(func=_synthetic)


def _view(args: argparse.Namespace) -> int:
    from bloomseg.viewer.launch import view

    view(args.folder, args.stem)
    return EXIT_OK


def add_view(commands: argparse._SubParsersAction) -> None:
    viewer = commands.add_parser(
        "view", help="open a predict output folder in napari to inspect and correct the cells "
        "(needs: pip install 'bloomseg[napari]')")
    viewer.add_argument("folder", help="a bloomseg predict output folder (or a <stem>_labels.tif)")
    viewer.add_argument("stem", nargs="?", default=None,
                        help="only this image's outputs (its file name without extension)")
    viewer.set_defaults(func=_view)
