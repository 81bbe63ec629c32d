"""``bloomseg predict``, ``evaluate`` and ``export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bloomseg.cli import EXIT_FAILED, EXIT_OK, EXIT_SKIPPED, add_output, add_run_flags, add_setting
from bloomseg.evaluation.evaluate import VISUALIZE, evaluate
from bloomseg.inference.options import IMAGE_DIAMETER, STRATEGIES, InferenceOptions, SegmenterSpec
from bloomseg.model.config import MODES
from bloomseg.outputs.classify import LABEL_NAMES
from bloomseg.outputs.cluster import WORKERS
from bloomseg.outputs.options import LARGE_PIXELS, OutputOptions

KEEP_EDGES_HELP = ("keep the slivers of cells cut by the image's edge that the model drops "
                   "(those under its tuned edge_min_area; the training masks leave them out)")
MODEL_HELP = ("default (the model shipped with bloomseg), a run folder (its best.pt), an "
              "exported model folder, or a .pt file")


def _spec(args: argparse.Namespace, names: tuple[str, ...]) -> SegmenterSpec:
    """The model and how to run it (checked where it is loaded, or by ``check``)."""
    options = {k: getattr(args, k) for k in names}
    if getattr(args, "mode", None):
        options["mode"] = args.mode
    return SegmenterSpec(args.model, args.weights, args.threshold, tuple(options.items()),
                         args.keep_edges, args.diameter, args.classes, args.classifier)


def _predict(args: argparse.Namespace) -> int:
    from bloomseg.data.images import expand_inputs
    from bloomseg.outputs.run import segment_files
    from bloomseg.outputs.summary import SUMMARY_FILE, judge_rows, run_verdict

    outputs = OutputOptions(args.save_prob, args.instances, args.coco,
                            True if args.large else None, args.block, args.halo, args.max_pixels,
                            args.qc_strict)
    outputs.check()
    spec = _spec(args, ("strategy", "overlap", "sigma", "context", "tta", "batch_size"))
    on_cluster = bool(args.workers or args.scheduler)
    if on_cluster:  # the workers load the model: its options are checked here, before them
        spec.check()
    else:  # loading checks its options, before any input is read
        segmenter = spec.load()
    paths = expand_inputs(args.inputs)
    if not paths:
        print("error: bloomseg predict: no input images found", file=sys.stderr)
        return EXIT_FAILED
    if on_cluster:
        from bloomseg.outputs.cluster import connect, cpu_count, segment_files_on_cluster

        with connect(args.workers, args.scheduler) as client:
            if not args.quiet:
                print(f"Dask cluster: {client.scheduler.address}, "
                      f"{len(client.scheduler_info()['workers'])} workers", file=sys.stderr)
            # the run's classes are judged here against the labs the classifier learnt
            classifier = spec.load().classifier if args.instances else None
            # a local cluster's workers share this machine's cores: each its share
            threads = max(1, cpu_count() // args.workers) if args.workers else None
            rows = segment_files_on_cluster(client, spec, paths, args.output, outputs,
                                            args.overwrite, progress=not args.quiet,
                                            threads=threads, resume=args.resume,
                                            classifier=classifier)
    else:
        classifier = segmenter.classifier
        rows = segment_files(segmenter, paths, args.output, outputs, args.overwrite,
                             progress=not args.quiet, resume=args.resume)
    done = sum(r["status"] == "ok" for r in rows)
    print(f"{done} of {len(rows)} images segmented -> {Path(args.output) / SUMMARY_FILE}")
    report = (Path(args.output) / "report.html").resolve()
    judged = [r for r in rows if r["status"] == "ok" and r.get("qc")]
    if judged:
        flagged = sum(r["qc"] == "check" for r in judged)
        print(f"{flagged} of {len(judged)} images need a look" + (
            f" (left out of the totals: --qc-strict): see {report}" if flagged and
            args.qc_strict else f": see {report}" if flagged else ""))
    if args.instances and any(r.get("red_profile") is not None for r in rows):
        # the rows are judged already: judged again on copies for the run's verdict text
        run = judge_rows([dict(r) for r in rows], run_verdict(rows, classifier))
        if run is not None:
            print(f"the run's classes: {run.text}")
    print(f"report: {report}")
    return EXIT_OK if done == len(rows) else EXIT_SKIPPED


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options of :class:`SegmenterSpec` and :class:`InferenceOptions` that predict and
    evaluate share."""
    parser.add_argument("--weights", help="backbone weights file (default: the cached download, "
                        "checked against the model's sha256)")
    add_setting(parser, InferenceOptions, "strategy", "tiling: stitch features, backbone once "
                "per pixel, or blend overlapping tiles as the reference did", "--strategy",
                choices=STRATEGIES)
    parser.add_argument("--tta", action="store_true", help="average over the three mirror flips too")
    add_setting(parser, SegmenterSpec, "threshold", "cell probability threshold", "--threshold")
    add_setting(parser, SegmenterSpec, "diameter", "the images' cell diameter: PX, 'auto' "
                "(read per image by the network where the model has a size head, else estimated) "
                "or 'model' (the model's own scale, no resampling); "
                "each image is resampled so its cells are at the model's, and every output "
                "mapped back", "--diameter", metavar="PX|auto|model")
    parser.add_argument("--keep-edges", action="store_true", help=KEEP_EDGES_HELP)
    parser.add_argument("--no-classes", dest="classes", action="store_false",
                        help="do not name the cells, even where the model has a classifier")
    parser.add_argument("--classifier", metavar="RUN",
                        help="name the cells with this classifier (a `bloomseg train-classes` "
                        "run folder, its best.pt, or an exported model holding one) instead "
                        "of the model's own")
    add_setting(parser, InferenceOptions, "batch_size", "tiles per pass")
    add_setting(parser, OutputOptions, "max_pixels", "refuse images of more pixels, read from the "
                "header before decoding: a guard against decompression bombs", metavar="N")


def add_predict(commands: argparse._SubParsersAction) -> None:
    pred = commands.add_parser("predict", help="segment images with a trained model")
    _add_model(pred)
    pred.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    add_output(pred)
    pred.add_argument("--mode", choices=MODES,
                      help="input mode (default: the one the model was trained with)")
    _add_run_options(pred)
    add_setting(pred, InferenceOptions, "overlap", "blend: tile overlap", "--overlap")
    add_setting(pred, InferenceOptions, "sigma", "blend: Gaussian sigma as a share of the tile",
                "--sigma")
    add_setting(pred, InferenceOptions, "context", "stitch: patches of context computed around "
                "each tile", "--context")
    pred.add_argument("--save-prob", action="store_true",
                      help="also write <stem>_prob.tif (float32 probability)")
    pred.add_argument("--instances", "--cells", dest="instances", action="store_true",
                      help="one label per cell: <stem>_labels.tif, <stem>_cells.csv, "
                      "<stem>.geojson (QuPath), cell counts in summary.csv")
    pred.add_argument("--coco", action="store_true",
                      help="also cells_coco.json (COCO, RLE masks); implies --instances")
    pred.add_argument("--qc-strict", action="store_true",
                      help="leave the images whose quality verdict is 'check' out of the "
                      "run's totals and parasitemia (with --cells; they are still written, "
                      "and listed first in the report)")
    large = pred.add_argument_group(
        "large images", f"images over {LARGE_PIXELS / 1e6:.0f} Mpx are predicted block by block "
        "in bounded memory: TIFF and zarr read lazily, cells merged across block borders, "
        "mask and labels written as tiled TIFFs")
    large.add_argument("--large", action="store_true",
                       help="predict every image block by block, whatever its size")
    add_setting(large, OutputOptions, "block", "block side in px, a multiple of 256", "--block")
    add_setting(large, OutputOptions, "halo", "context around each block in px, more than the "
                "largest cell", "--halo")
    dask = pred.add_argument_group(
        "Dask", "one task per image on worker processes; outputs are written by the workers "
        "(needs: pip install 'bloomseg[distributed]')")
    where = dask.add_mutually_exclusive_group()
    where.add_argument("--workers", type=WORKERS, metavar="N",
                       help=f"start a local Dask cluster of N worker processes ({WORKERS.describe()})")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="use a running Dask cluster, e.g. tcp://HOST:8786 (the output "
                       "folder and inputs must be on storage the workers share)")
    again = pred.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    again.add_argument("--resume", action="store_true",
                       help="continue a stopped run into the same folder: keep the images it "
                       "finished, redo the rest (those a kill left half written included)")
    pred.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    pred.set_defaults(func=_predict)


def _classify(args: argparse.Namespace) -> int:
    from bloomseg.data.images import expand_inputs
    from bloomseg.outputs.classify import classify_files
    from bloomseg.outputs.summary import SUMMARY_FILE

    segmenter = SegmenterSpec(args.model, classifier=args.classifier).load()
    paths = expand_inputs(args.inputs)
    if not paths:
        print("error: bloomseg classify: no input images found", file=sys.stderr)
        return EXIT_FAILED
    rows = classify_files(segmenter, paths, args.labels, args.output, args.diameter,
                          args.overwrite, progress=not args.quiet)
    done = sum(r["status"] == "ok" for r in rows)
    print(f"{done} of {len(rows)} images' cells named -> {Path(args.output) / SUMMARY_FILE}")
    print(f"report: {(Path(args.output) / 'report.html').resolve()}")
    return EXIT_OK if done == len(rows) else EXIT_SKIPPED


def add_classify(commands: argparse._SubParsersAction) -> None:
    cls = commands.add_parser(
        "classify", help="name the cells of label images made elsewhere (cellpose, StarDist, "
        "a hand correction)",
        description="Name every cell of each image's label image with the model's cell "
        "classifier, as it is (none joined, split or dropped), and write what `predict "
        "--cells` writes: labels, cell table with classes, QuPath GeoJSON, overlay, "
        "summary.csv with counts and parasitemia, report.html.")
    cls.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, folders or globs")
    cls.add_argument("--labels", required=True, metavar="LABELS",
                     help="the folder of the label images (integer TIFF or PNG, 0 background), "
                     "each found by its image's stem: " + ", ".join(LABEL_NAMES) +
                     "; or one label image for one image")
    add_output(cls)
    cls.add_argument("--model", default="default", help=MODEL_HELP + " (default: %(default)s)")
    cls.add_argument("--classifier", metavar="RUN",
                     help="name the cells with this classifier (a `bloomseg train-classes` "
                     "run folder, its best.pt, or an exported model holding one) instead "
                     "of the model's own")
    cls.add_argument("--diameter", default="auto", type=IMAGE_DIAMETER, metavar="PX|auto",
                     help="the images' cell diameter in px, or 'auto': the median size of "
                     "each label image's whole cells (read from the image where fewer than 5 "
                     "are whole) (default: %(default)s)")
    add_run_flags(cls)
    cls.set_defaults(func=_classify)


def _evaluate(args: argparse.Namespace) -> int:
    spec = _spec(args, ("strategy", "tta", "batch_size"))
    m = evaluate(spec.load(), args.data, args.output, args.split, args.visualize,
                 progress=not args.quiet, max_pixels=args.max_pixels, overwrite=args.overwrite)
    for s in m["skipped"]:
        print(f"skipped {s['reason']}", file=sys.stderr)
    if "dice" in m:
        print(f"{m['num_samples']} images: Dice {m['dice']['cell']:.4f}, IoU "
              f"{m['iou']['cell']:.4f} (cell, all pixels of the images with masks); per-image "
              f"mean Dice {m['per_image_mean']['dice']:.4f}")
    else:
        print(f"{m['num_samples']} images (boxes only: no pixel scores)")
    boxes = m.get("instances", {}).get("boxes")
    if boxes:
        print(f"cells: F1 {boxes['f1']:.4f} (precision {boxes['precision']:.4f}, recall "
              f"{boxes['recall']:.4f}) against {boxes['true_cells']} boxes; mean count error "
              f"{boxes['mean_relative_count_error']:.2%}")
    masks = m.get("instances", {}).get("masks")
    if masks:
        print(f"cells against label masks: F1 {masks['f1']:.4f}, panoptic quality "
              f"{masks['panoptic_quality']:.4f}")
    qc = m.get("quality")
    if qc:
        print(f"quality verdict: {qc['failed_flagged']} of {qc['failed']} failed images "
              f"flagged, {qc['good_flagged']} of {qc['images'] - qc['failed']} good ones "
              f"({qc['definition']})")
    print(f"-> {Path(args.output) / 'metrics.json'}")
    print(f"report: {(Path(args.output) / 'report.html').resolve()}")
    if m["skipped"]:
        print(f"{len(m['skipped'])} images skipped (listed in metrics.json and the report)")
        return EXIT_SKIPPED
    return EXIT_OK


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    ev = commands.add_parser("evaluate", help="score a trained model on a labelled split")
    _add_model(ev)
    ev.add_argument("--data", required=True, help="dataset root (ROOT/SPLIT/original, mask)")
    add_setting(ev, evaluate, "split", "split folder", "--split")
    add_output(ev)
    add_setting(ev, evaluate, "visualize", "pictures of the N best and N worst images",
                "--visualize", accepted=VISUALIZE, metavar="N")
    _add_run_options(ev)
    add_run_flags(ev)
    ev.set_defaults(func=_evaluate)


def _export(args: argparse.Namespace) -> int:
    from bloomseg.model.files import export_model

    folder = export_model(args.model, args.output, overwrite=args.overwrite,
                          classifier=args.classifier)
    print(f"exported -> {folder} (use it as: bloomseg predict {folder} IMAGES -o OUT)")
    return EXIT_OK


def add_export(commands: argparse._SubParsersAction) -> None:
    exp = commands.add_parser("export", help="write a trained model as model.safetensors + "
                              "config.json, to share or ship")
    _add_model(exp)
    add_output(exp, "folder to write")
    exp.add_argument("--overwrite", action="store_true", help="replace an exported model there")
    exp.add_argument("--classifier", metavar="RUN", help="ship this cell classifier (a "
                     "`bloomseg train-classes` run folder or its best.pt) with the model")
    exp.set_defaults(func=_export)
