"""The ``bloomseg`` command line: a thin layer over the Python API.

Exit codes: 0 all done, 1 failed, 2 bad command line, 3 done but some inputs skipped.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from bloomseg import __version__
from bloomseg.errors import BloomsegError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3
KEEP_EDGES_HELP = ("keep the slivers of cells cut by the image's edge that the model drops "
                   "(those under its tuned edge_min_area; the training masks leave them out)")
MODEL_HELP = ("default (the model shipped with bloomseg), a run folder (its best.pt), an "
              "exported model folder, or a .pt file")


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, in order.

    A zarr array folder (``*.zarr``) is an image. Folders are not searched below their
    top level, so links that loop cannot trap the search. A path that does not exist is
    kept, so the caller reports it like any bad input.
    """
    from bloomseg.io import IMAGE_SUFFIXES

    def is_image(p: Path) -> bool:
        # a broken or looping link with an image's name is kept, to be reported
        return ((p.is_file() or p.is_symlink()) and p.suffix.lower() in IMAGE_SUFFIXES) or \
            (p.is_dir() and p.suffix.lower() == ".zarr")

    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and not is_image(path):
            found += sorted(p for p in path.iterdir() if is_image(p))
        elif not path.exists() and glob.has_magic(item):
            found += sorted(Path(p) for p in glob.glob(item) if Path(p).is_file() or is_image(Path(p)))
        else:
            found.append(path)
    # one file reached twice (through links, or a folder given twice) is read once
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


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
    from bloomseg.backbone import load_backbone

    names = args.backbone or ["dinobloom-s"]
    weights = args.weights or [None] * len(names)
    if len(weights) != len(names):
        print(f"error: {len(names)} --backbone but {len(weights)} --weights; give one "
              "--weights per --backbone, in the same order, or none", file=sys.stderr)
        return EXIT_USAGE
    if len(set(names)) < len(names):
        print("error: give each --backbone once", file=sys.stderr)
        return EXIT_USAGE
    if bool(args.data) == bool(args.inputs):
        print("error: give INPUT images, or --data DIR for the comparison grid", file=sys.stderr)
        return EXIT_USAGE
    if args.inputs and len(names) > 1:
        print("error: one --backbone per run on INPUT images (several: --data)", file=sys.stderr)
        return EXIT_USAGE
    backbones = {name: load_backbone(name, w) for name, w in zip(names, weights)}
    if args.data:
        return _feature_grids(args, backbones)
    return _feature_maps(args, backbones[names[0]])


def _feature_maps(args: argparse.Namespace, backbone) -> int:
    import numpy as np
    from tqdm import tqdm

    from bloomseg.features import extract_features, pca_figure
    from bloomseg.io import atomic_output, read_image, save_png

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
        features = extract_features(backbone, image, args.mode, args.tile, args.batch_size)
        with atomic_output(npy) as f:
            np.save(f, features)
        save_png(png, pca_figure(image, features))
        if not args.quiet:
            tqdm.write(f"{path.name}: {features.shape} features in "
                       f"{time.perf_counter() - start:.1f} s -> {npy}")
    return EXIT_SKIPPED if skipped else EXIT_OK


def _feature_grids(args: argparse.Namespace, backbones: dict) -> int:
    import numpy as np
    from tqdm import tqdm

    from bloomseg.data import scan_split
    from bloomseg.features import compare_modes, save_comparison_grid
    from bloomseg.io import read_image, save_csv

    scan = scan_split(args.data, args.split)
    out = Path(args.output)
    table = out / "feature_comparison.csv"
    if table.exists() and not args.overwrite:
        print(f"error: {table} exists (use --overwrite)", file=sys.stderr)
        return EXIT_FAILED
    count = max(1, min(args.images, len(scan.samples)))
    picks = np.unique(np.linspace(0, len(scan.samples) - 1, count).round().astype(int))
    rows = []
    for i in tqdm(picks, desc="feature grids", unit="image", disable=args.quiet):
        sample = scan.samples[i]
        image = read_image(sample.image)
        results = compare_modes(backbones, image, args.tile, args.batch_size)
        path = out / f"feature_comparison_{sample.stem}.png"
        save_comparison_grid(image, results, path,
                             title=f"{args.split}/{sample.stem}: PCA of patch features")
        rows += [{"image": sample.stem, "backbone": r.backbone, "mode": r.mode,
                  "grid": f"{r.features.shape[2]}x{r.features.shape[1]}",
                  "seconds": f"{r.seconds:.3f}", "figure": path.name} for r in results]
        if not args.quiet:
            tqdm.write(f"{sample.stem}: {path}")
    save_csv(table, rows, ["image", "backbone", "mode", "grid", "seconds", "figure"])
    print(f"{len(picks)} comparison grids, {len(backbones)} backbones x 3 modes -> {out}")
    return EXIT_OK


def _cmd_explore(args: argparse.Namespace) -> int:
    from bloomseg.explore import explore

    out = Path(args.output)
    if (out / "summary.md").exists() and not args.overwrite:
        print(f"error: {out / 'summary.md'} exists (use --overwrite)", file=sys.stderr)
        return EXIT_FAILED
    summary = explore(args.data, out, args.split, args.samples, args.min_area,
                      progress=not args.quiet)
    for split, s in summary["splits"].items():
        line = (f"{split}: {s['images']} images, cell fraction {s['cell_fraction']['mean']:.3f}, "
                f"{s['components_per_image']['mean']:.1f} mask components per image")
        if "boxes_per_image" in s:
            line += f", {s['boxes_per_image']['mean']:.1f} boxes per image"
        print(line)
    print(f"-> {out / 'summary.md'}")
    return EXIT_OK


def _cmd_predict(args: argparse.Namespace) -> int:
    from bloomseg.batch import OutputOptions, segment_files
    from bloomseg.cluster import ModelSpec
    from bloomseg.model import resolve_model

    options = {k: getattr(args, k)
               for k in ("strategy", "overlap", "sigma", "context", "tta", "batch_size")}
    if args.mode:
        options["mode"] = args.mode
    spec = ModelSpec(args.model, args.weights, args.threshold, tuple(options.items()),
                     args.keep_edges)
    outputs = OutputOptions(args.save_prob, args.instances, args.coco,
                            True if args.large else None, args.block, args.halo, args.max_pixels)
    try:
        outputs.check()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    paths = expand_inputs(args.inputs)
    if not paths:
        print("error: no input images found", file=sys.stderr)
        return EXIT_FAILED
    if args.workers or args.scheduler:
        from bloomseg.cluster import connect, segment_files_on_cluster

        resolve_model(args.model)  # a wrong name fails here, not in every task
        with connect(args.workers, args.scheduler) as client:
            if not args.quiet:
                print(f"Dask cluster: {client.scheduler.address}, "
                      f"{len(client.scheduler_info()['workers'])} workers", file=sys.stderr)
            rows = segment_files_on_cluster(client, spec, paths, args.output, outputs,
                                            args.overwrite, progress=not args.quiet,
                                            resume=args.resume)
    else:
        rows = segment_files(spec.load(), paths, args.output, outputs, args.overwrite,
                             progress=not args.quiet, resume=args.resume)
    done = sum(r["status"] == "ok" for r in rows)
    print(f"{done} of {len(rows)} images segmented -> {Path(args.output) / 'summary.csv'}")
    print(f"report: {(Path(args.output) / 'report.html').resolve()}")
    return EXIT_OK if done == len(rows) else EXIT_SKIPPED


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bloomseg.evaluate import evaluate
    from bloomseg.predict import Segmenter

    out = Path(args.output)
    if (out / "metrics.json").exists() and not args.overwrite:
        print(f"error: {out / 'metrics.json'} exists (use --overwrite)", file=sys.stderr)
        return EXIT_FAILED
    options = {k: getattr(args, k) for k in ("strategy", "tta", "batch_size")}
    segmenter = Segmenter.load(args.model, weights=args.weights, threshold=args.threshold,
                               keep_edges=args.keep_edges, **options)
    m = evaluate(segmenter, args.data, out, args.split, args.visualize, progress=not args.quiet,
                 max_pixels=args.max_pixels)
    for s in m["skipped"]:
        print(f"skipped {s['reason']}", file=sys.stderr)
    print(f"{m['num_samples']} images: Dice {m['dice']['cell']:.4f}, IoU {m['iou']['cell']:.4f} "
          f"(cell, all pixels); per-image mean Dice {m['per_image_mean']['dice']:.4f}")
    boxes = m.get("instances", {}).get("boxes")
    if boxes:
        print(f"cells: F1 {boxes['f1']:.4f} (precision {boxes['precision']:.4f}, recall "
              f"{boxes['recall']:.4f}) against {boxes['true_cells']} boxes; mean count error "
              f"{boxes['mean_relative_count_error']:.2%}")
    masks = m.get("instances", {}).get("masks")
    if masks:
        print(f"cells against label masks: F1 {masks['f1']:.4f}, panoptic quality "
              f"{masks['panoptic_quality']:.4f}")
    print(f"-> {out / 'metrics.json'}")
    print(f"report: {(out / 'report.html').resolve()}")
    if m["skipped"]:
        print(f"{len(m['skipped'])} images skipped (listed in metrics.json and the report)")
        return EXIT_SKIPPED
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from bloomseg.model import export_model

    try:
        folder = export_model(args.model, args.output, overwrite=args.overwrite)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"exported -> {folder} (use it as: bloomseg predict {folder} IMAGES -o OUT)")
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    from bloomseg.doctor import report

    rows = report()
    width = max(len(name) for name, _ in rows)
    for name, finding in rows:
        print(f"{name:<{width}}  {finding}")
    return EXIT_OK


def _cmd_synthetic(args: argparse.Namespace) -> int:
    from bloomseg.synthetic import REAL_SCALE, write_dataset

    out = Path(args.output)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"error: {out} is not empty (use --overwrite)", file=sys.stderr)
        return EXIT_FAILED
    write_dataset(out, args.train, args.test, seed=args.seed, boxes=True, **REAL_SCALE)
    (out / "SYNTHETIC.txt").write_text(
        "Synthetic smears made by `bloomseg synthetic`: drawn disks, not real cells.\n"
        "No figure about real blood smears may be taken from them.\n", "utf-8")
    print(f"{args.train} train and {args.test} test synthetic smears "
          f"({REAL_SCALE['size'][1]}x{REAL_SCALE['size'][0]}) -> {out}")
    return EXIT_OK


def _interrupt_on_sigterm() -> None:
    """Let `kill` and batch schedulers stop a run the way Ctrl-C does (logged, resumable)."""
    import signal

    def stop(signum, frame):  # noqa: ARG001 (signal handler signature)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from bloomseg.training import TrainConfig, resume, train

    _interrupt_on_sigterm()

    if args.resume:
        result = resume(args.resume, progress=not args.quiet)
    else:
        if not args.data or not args.out:
            print("error: --data and --out are needed (or --resume RUN_DIR)", file=sys.stderr)
            return EXIT_USAGE
        names = {f.name for f in fields(TrainConfig)}
        settings = {k: v for k, v in vars(args).items() if k in names}
        result = train(TrainConfig(**settings), progress=not args.quiet, overwrite=args.overwrite)
    score = ("no validation images, last epoch" if result.best_dice is None
             else f"best val Dice {result.best_dice:.4f} at epoch")
    print(f"{score} {result.best_epoch}: {result.run_dir / 'best.pt'}")
    return EXIT_OK


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    from dataclasses import fields

    from bloomseg.heads import HEADS
    from bloomseg.losses import SegmentationLoss
    from bloomseg.training import SCHEDULERS, TrainConfig
    from bloomseg.views import MODES

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    p = commands.add_parser(
        "train", help="train a head on frozen DinoBloom features, or a U-Net from scratch",
        description="Train on ROOT/train/{original,mask} (80/20 train/validation split, kept "
        "in splits.json). Everything goes into the run folder --out: config.json, "
        "history.json/.csv, best.pt, last.pt, training_curves.png, train.log.")
    io = p.add_argument_group("data and run folder")
    io.add_argument("--data", help="dataset root holding train/original and train/mask")
    io.add_argument("--out", help="run folder to create")
    io.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last.pt")
    io.add_argument("--overwrite", action="store_true", help="start again in a used run folder")
    io.add_argument("--init", metavar="MODEL",
                    help="start from this model's weights instead of random ones: fine-tune "
                    "`default`, a run folder or a model file on your smears (same backbone, "
                    "head and settings)")
    io.add_argument("-q", "--quiet", action="store_true", help="no progress bars or epoch lines")
    m = p.add_argument_group("model")
    m.add_argument("--mode", choices=MODES, default=defaults["mode"],
                   help="what the network sees: tiles, the padded image, or the resized image "
                   "(default: %(default)s)")
    m.add_argument("--backbone", default=defaults["backbone"],
                   help="dinobloom-s|b|l|g (frozen), dinov2-*, or unet (from scratch, no "
                   "weights) (default: %(default)s)")
    m.add_argument("--weights", help="backbone weights file (default: the cached download)")
    m.add_argument("--head", choices=[*HEADS, "unet"],
                   help="segmentation head (default: fusion; unet for --backbone unet)")
    m.add_argument("--unfreeze-blocks", "--unfreeze_blocks", type=int,
                   default=defaults["unfreeze_blocks"], help="fine-tune the last N backbone "
                   "blocks at lr/10 (turns the feature cache off) (default: %(default)s)")
    m.add_argument("--tile", type=int, default=defaults["tile"],
                   help="tile side in pixels, a multiple of 14 (default: %(default)s)")
    m.add_argument("--unet-levels", "--unet_levels", type=int, default=defaults["unet_levels"],
                   help="resolution levels of the unet (default: %(default)s)")
    m.add_argument("--no-centres", "--no-centers", dest="centres", action="store_false",
                   help="no cell-centre map, even where boxes/ exist (cells are then "
                   "separated by the distance transform)")
    m.add_argument("--centre-weight", "--centre_weight", type=float,
                   default=defaults["centre_weight"],
                   help="weight of the centre-map loss (default: %(default)s)")
    m.add_argument("--centre-sigma", "--centre_sigma", type=float,
                   default=defaults["centre_sigma"],
                   help="sigma of each centre Gaussian as a share of its box's size "
                   "(default: %(default)s)")
    t = p.add_argument_group("training")
    for flag, kind, text in (
            ("epochs", int, "epochs"), ("batch_size", int, "tiles per step"),
            ("lr", float, "AdamW learning rate of the head"),
            ("weight_decay", float, "AdamW weight decay"),
            ("tiles_per_image", int, "training tiles per image per epoch"),
            ("val_fraction", float, "share of the train folder held out for validation (0: "
             "a final fit on every image; the last epoch is kept, and the cell-separation "
             "settings come from --init's model)"),
            ("grad_clip", float, "clip the gradient norm to this (0: off)"),
            ("early_stopping", int, "stop after this many epochs without a better val Dice "
             "(0: off)"),
            ("seed", int, "seed of the split, the head and every random draw"),
            ("bce_weight", float, "BCE share of bce_dice"),
            ("dice_weight", float, "Dice share of bce_dice"),
            ("step_size", int, "epochs between learning-rate steps (--scheduler step)"),
            ("step_gamma", float, "learning-rate factor per step (--scheduler step)")):
        t.add_argument(f"--{flag.replace('_', '-')}", f"--{flag}", dest=flag, type=kind,
                       default=defaults[flag], help=f"{text} (default: %(default)s)")
    t.add_argument("--loss", choices=SegmentationLoss.NAMES, default=defaults["loss"],
                   help="(default: %(default)s)")
    t.add_argument("--scheduler", choices=SCHEDULERS, default=defaults["scheduler"],
                   help="(default: %(default)s)")
    a = p.add_argument_group("augmentation and cache")
    a.add_argument("--no-flips", dest="flips", action="store_false", help="no mirror flips")
    a.add_argument("--no-rotations", dest="rotations", action="store_false",
                   help="no 90-degree rotations")
    a.add_argument("--no-colour-jitter", "--no-color-jitter", dest="colour_jitter",
                   action="store_false", help="no brightness/contrast/saturation/hue jitter")
    a.add_argument("--hue-jitter", "--hue_jitter", type=float, default=defaults["hue_jitter"],
                   metavar="TURNS", help="largest hue shift, in turns of the colour wheel; 0.5 "
                   "draws any hue, for stains unlike the training smears' (default: %(default)s)")
    a.add_argument("--no-cache", dest="cache", action="store_false",
                   help="run the frozen backbone on every tile of every epoch")
    a.add_argument("--cache-dir", help="decoded images and features (default: "
                   "$BLOOMSEG_HOME/cache)")
    _add_max_pixels(io)
    p.set_defaults(func=_cmd_train)


def _add_max_pixels(parser: argparse.ArgumentParser) -> None:
    from bloomseg.io import MAX_PIXELS

    parser.add_argument("--max-pixels", "--max_pixels", dest="max_pixels", type=int,
                        default=MAX_PIXELS, metavar="N",
                        help="refuse images of more pixels, read from the header before "
                        "decoding: a guard against decompression bombs (default: %(default)s)")


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

    ex = commands.add_parser(
        "explore", help="sample grid, cell statistics and a summary of a labelled dataset")
    ex.add_argument("--data", required=True, help="dataset root (ROOT/SPLIT/original, mask, boxes)")
    ex.add_argument("-o", "--output", required=True, help="output folder")
    ex.add_argument("--split", action="append", help="split folder to describe; repeat for "
                    "several (default: all found)")
    ex.add_argument("--samples", type=int, default=6, help="images in the sample grid (default: 6)")
    ex.add_argument("--min-area", type=int, default=50,
                    help="smaller mask components (px) are specks, not cells (default: 50)")
    ex.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    ex.set_defaults(func=_cmd_explore)

    feats = commands.add_parser(
        "features", help="backbone patch features as PCA pictures: per image, or the "
        "mode x backbone comparison grid (--data)",
        description="With INPUT images: <stem>_features.npy and <stem>_pca.png per image. "
        "With --data: for a few images of a split, one figure each comparing the resize, "
        "padding and tiling input modes (columns) for every --backbone (rows), plus "
        "feature_comparison.csv with the grid sizes and seconds.")
    feats.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or globs")
    feats.add_argument("-o", "--output", required=True, help="output folder")
    feats.add_argument("--data", help="dataset root: make the comparison grid instead")
    feats.add_argument("--split", default="test", help="--data split folder (default: test)")
    feats.add_argument("--images", type=int, default=2,
                       help="--data: images to compare, spread over the split (default: 2)")
    model = feats.add_argument_group("backbone")
    model.add_argument("--backbone", action="append",
                       help="registry name (default: dinobloom-s); repeat with --data")
    model.add_argument("--weights", action="append",
                       help="weights file, one per --backbone (default: the cached download)")
    run = feats.add_argument_group("run")
    run.add_argument("--mode", choices=["tiling", "padding", "resize"], default="tiling",
                     help="INPUT images: how the backbone sees them (default: tiling)")
    run.add_argument("--tile", type=int, default=224, help="tile side, multiple of 14 (default: 224)")
    run.add_argument("--batch-size", type=int, default=8, help="tiles per backbone call (default: 8)")
    run.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    feats.set_defaults(func=_cmd_features)
    _add_train_parser(commands)

    pred = commands.add_parser("predict", help="segment images with a trained model")
    pred.add_argument("model", help=MODEL_HELP)
    pred.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    pred.add_argument("-o", "--output", required=True, help="output folder")
    pred.add_argument("--weights", help="backbone weights file (default: the cached download)")
    pred.add_argument("--mode", choices=["tiling", "padding", "resize"],
                      help="input mode (default: the one the model was trained with)")
    pred.add_argument("--strategy", choices=["stitch", "blend"], default="stitch",
                      help="tiling: stitch features, backbone once per pixel (default), or "
                      "blend overlapping tiles as the reference did")
    pred.add_argument("--overlap", type=float, default=0.75,
                      help="blend: tile overlap (default: %(default)s)")
    pred.add_argument("--sigma", type=float, default=0.125,
                      help="blend: Gaussian sigma as a share of the tile (default: %(default)s)")
    pred.add_argument("--context", type=int, default=0,
                      help="stitch: patches of context computed around each tile (default: 0)")
    pred.add_argument("--tta", action="store_true", help="average over the three mirror flips too")
    pred.add_argument("--threshold", type=float, default=0.5,
                      help="cell probability threshold (default: %(default)s)")
    pred.add_argument("--keep-edges", action="store_true", help=KEEP_EDGES_HELP)
    pred.add_argument("--batch-size", type=int, default=8, help="tiles per pass (default: 8)")
    pred.add_argument("--save-prob", action="store_true",
                      help="also write <stem>_prob.tif (float32 probability)")
    pred.add_argument("--instances", action="store_true",
                      help="one label per cell: <stem>_labels.tif, <stem>_cells.csv, "
                      "<stem>.geojson (QuPath), cell counts in summary.csv")
    pred.add_argument("--coco", action="store_true",
                      help="with --instances: also cells_coco.json (COCO, RLE masks)")
    large = pred.add_argument_group(
        "large images", "images over 36 Mpx (6000x6000) are predicted block by block in "
        "bounded memory: TIFF and zarr read lazily, cells merged across block borders, "
        "mask and labels written as tiled TIFFs")
    large.add_argument("--large", action="store_true",
                       help="predict every image block by block, whatever its size")
    large.add_argument("--block", type=int, default=2048,
                       help="block side in px, a multiple of 256 (default: %(default)s)")
    large.add_argument("--halo", type=int, default=256,
                       help="context around each block in px, more than the largest cell "
                       "(default: %(default)s)")
    dask = pred.add_argument_group(
        "Dask", "one task per image on worker processes; outputs are written by the workers "
        "(needs: pip install 'bloomseg[distributed]')")
    where = dask.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N",
                       help="start a local Dask cluster of N worker processes")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="use a running Dask cluster, e.g. tcp://HOST:8786 (the output "
                       "folder and inputs must be on storage the workers share)")
    _add_max_pixels(pred)
    again = pred.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    again.add_argument("--resume", action="store_true",
                       help="continue a stopped run into the same folder: keep the images it "
                       "finished, redo the rest (those a kill left half written included)")
    pred.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    pred.set_defaults(func=_cmd_predict)

    ev = commands.add_parser("evaluate", help="score a trained model on a labelled split")
    ev.add_argument("model", help=MODEL_HELP)
    ev.add_argument("--data", required=True, help="dataset root (ROOT/SPLIT/original, mask)")
    ev.add_argument("--split", default="test", help="split folder (default: %(default)s)")
    ev.add_argument("-o", "--output", required=True, help="output folder")
    ev.add_argument("--visualize", type=int, default=0, metavar="N",
                    help="pictures of the N best and N worst images")
    ev.add_argument("--weights", help="backbone weights file (default: the cached download)")
    ev.add_argument("--strategy", choices=["stitch", "blend"], default="stitch")
    ev.add_argument("--tta", action="store_true", help="average over the three mirror flips too")
    ev.add_argument("--threshold", type=float, default=0.5)
    ev.add_argument("--keep-edges", action="store_true", help=KEEP_EDGES_HELP)
    ev.add_argument("--batch-size", type=int, default=8)
    _add_max_pixels(ev)
    ev.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    ev.set_defaults(func=_cmd_evaluate)

    exp = commands.add_parser("export", help="write a trained model as model.safetensors + "
                              "config.json, to share or ship")
    exp.add_argument("model", help=MODEL_HELP)
    exp.add_argument("-o", "--output", required=True, help="folder to write")
    exp.add_argument("--overwrite", action="store_true", help="replace an exported model there")
    exp.set_defaults(func=_cmd_export)

    commands.add_parser("doctor", help="versions, threads, cache, weights, models and data found"
                        ).set_defaults(func=_cmd_doctor)

    syn = commands.add_parser("synthetic", help="a small dataset of synthetic smears (drawn "
                              "disks with masks and boxes) to try things on")
    syn.add_argument("-o", "--output", required=True, help="dataset folder to write")
    syn.add_argument("--train", type=int, default=4, help="train images (default: %(default)s)")
    syn.add_argument("--test", type=int, default=2, help="test images (default: %(default)s)")
    syn.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    syn.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    syn.set_defaults(func=_cmd_synthetic)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    # file names that are not UTF-8 are printed with \x escapes rather than crash a run
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BloomsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:  # the system's own message names the file
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
