"""``bloomseg train``: every option is a :class:`~bloomseg.train.config.TrainConfig` field,
with its default and range."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from bloomseg.cli import EXIT_OK, EXIT_USAGE, add_output, add_setting, explicit
from bloomseg.model.config import HEADS, MODES, NORMALISATIONS
from bloomseg.train.augment import AUGMENTATIONS
from bloomseg.train.config import ADAPT, FREEZE, LOSSES, SCHEDULERS, TrainConfig


def _augmentations(text: str) -> list[str]:
    """``--augment``'s value: names joined by commas, ``all`` or ``none``."""
    if text in ("all", "none"):
        return list(AUGMENTATIONS) if text == "all" else []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown)} is not one of {', '.join(AUGMENTATIONS)} (or all, none)")
    return names


def _interrupt_on_sigterm() -> None:
    """Let `kill` and batch schedulers stop a run the way Ctrl-C does (logged, resumable)."""
    import signal

    def stop(signum, frame):  # noqa: ARG001 (signal handler signature)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _train(args: argparse.Namespace) -> int:
    from bloomseg.train.run import resume, train

    _interrupt_on_sigterm()
    if args.adapt_classes_only:
        return _adapt_classes(args)
    if args.resume:
        result = resume(args.resume, progress=not args.quiet)
    else:
        if not args.data or not args.output:
            print("error: bloomseg train: --data and -o/--output are needed (or --resume "
                  "RUN_DIR)", file=sys.stderr)
            return EXIT_USAGE
        settings = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                    if hasattr(args, f.name)} | {"out": args.output}
        if args.adapt:  # the recipe's settings, except those given on the command line
            given = explicit(args.parser, args.argv)
            settings = {k: v for k, v in settings.items() if k in given or k not in ADAPT}
            config = TrainConfig.adapted(**settings)
        else:
            config = TrainConfig(**settings)
        result = train(config, progress=not args.quiet, overwrite=args.overwrite)
    score = ("no validation images, last epoch" if result.best_score is None
             else f"best val score {result.best_score:.4f} at epoch")
    print(f"{score} {result.best_epoch}: {result.run_dir / 'best.pt'}")
    if result.model_dir is not None:
        print(f"adapted model: {result.model_dir} (bloomseg predict {result.model_dir} "
              "IMAGES -o OUT)")
    return EXIT_OK


def _adapt_classes(args: argparse.Namespace) -> int:
    from bloomseg.train.adapted import adapt_model_classes

    if not args.data or not args.output:
        print("error: bloomseg train --adapt-classes-only: --data and -o/--output are needed",
              file=sys.stderr)
        return EXIT_USAGE
    folder = adapt_model_classes(args.data, args.output, args.init or "default", args.overwrite,
                                 log=(lambda line: None) if args.quiet else print)
    print(f"adapted model: {folder} (bloomseg predict {folder} IMAGES -o OUT)")
    return EXIT_OK


def add_train(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train", help="train a head on frozen DinoBloom features, or a U-Net from scratch",
        description="Train on ROOT/train/{original, mask and/or boxes}, validating on ROOT/val "
        "where it exists (else on a 20%% share of train, kept in splits.json); several --data "
        "roots train one model, each dataset an equal share of every epoch. Images with boxes "
        "and no mask learn their mask from the boxes. Everything goes into the run folder "
        "-o/--output: config.json, history.json/.csv, best.pt, last.pt, training_curves.png, "
        "train.log.")
    io = p.add_argument_group("data and run folder")
    io.add_argument("--data", action="append", metavar="ROOT",
                    help="dataset root holding train/original and train/mask or train/boxes "
                    "(repeat for several datasets)")
    io.add_argument("--partial-boxes", action="append", default=[], metavar="ROOT",
                    help="a --data root whose boxes do not hold every cell: nothing outside "
                    "them is taken as background (repeatable)")
    io.add_argument("--ignore-masks", action="append", default=[], metavar="ROOT",
                    help="a --data root whose masks are not used: its masks are learned "
                    "from its boxes (repeatable; to compare with training on the masks)")
    add_output(io, "run folder to create", "--out", required=False)
    io.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last.pt")
    io.add_argument("--overwrite", action="store_true", help="start again in a used run folder")
    io.add_argument("--init", metavar="MODEL",
                    help="start from this model's weights instead of random ones: fine-tune "
                    "`default`, a run folder or a model file on your smears (same backbone, "
                    "head and settings)")
    io.add_argument("--adapt", action="store_true",
                    help="fine-tune --init (default: the default model) on a few corrected "
                    "images of your microscope, in minutes: every image trains, "
                    f"{ADAPT['items_per_epoch']} tiles per epoch for {ADAPT['epochs']} epochs "
                    f"at lr {ADAPT['lr']}, --freeze {ADAPT['freeze']}, the cell separation tuned "
                    "on the images; options you give replace these. Where the images' "
                    "<stem>_cells.csv name classes (napari's Save writes them), the cell "
                    "classifier adapts to them too. The model goes to RUN/model with a "
                    "model card")
    io.add_argument("--adapt-classes-only", action="store_true",
                    help="adapt only the cell classifier of --init (default: the default "
                    "model) to the classes named in the --data folder's <stem>_cells.csv, in "
                    "seconds; the segmentation is kept as it is")
    io.add_argument("--hold-out", action="append", default=[], metavar="NAME",
                    help="an image (file name without extension) held out to validate on "
                    "instead of val/ or --val-fraction's share (repeatable)")
    io.add_argument("-q", "--quiet", action="store_true", help="no progress bars or epoch lines")
    add_setting(io, TrainConfig, "max_pixels", "refuse images of more pixels, read from the "
                "header before decoding: a guard against decompression bombs", metavar="N")

    m = p.add_argument_group("model")
    add_setting(m, TrainConfig, "mode", "what the network sees: tiles, the padded image, or the "
                "resized image", "--mode", choices=MODES)
    add_setting(m, TrainConfig, "backbone", "dinobloom-s|b|l|g (frozen), dinov2-*, or unet "
                "(from scratch, no weights)", "--backbone")
    m.add_argument("--weights", help="backbone weights file (default: the cached download)")
    m.add_argument("--head", choices=[*HEADS, "unet"],
                   help="segmentation head (default: fusion; unet for --backbone unet)")
    add_setting(m, TrainConfig, "unfreeze_blocks", "fine-tune the last N backbone blocks at "
                "lr/10 (turns the feature cache off)")
    add_setting(m, TrainConfig, "tile", "tile side in pixels, a multiple of 14", "--tile")
    add_setting(m, TrainConfig, "unet_levels", "resolution levels of the unet")
    m.add_argument("--no-centres", "--no-centers", dest="centres", action="store_false",
                   help="no cell-centre map, even where boxes/ exist (cells are then "
                   "separated by the distance transform)")
    add_setting(m, TrainConfig, "centre_weight", "weight of the centre-map loss")
    add_setting(m, TrainConfig, "centre_sigma", "sigma of each centre Gaussian as a share of "
                "its box's size")
    add_setting(m, TrainConfig, "normalise", "per-image normalisation, the same in training "
                "and prediction: each channel's 1st and 99th percentiles to black and white, "
                "or none", "--normalise", "--normalize", choices=NORMALISATIONS)
    add_setting(m, TrainConfig, "pairwise_weight", "weight of the term that makes neighbouring "
                "pixels of like colour share a label, where masks are learned from boxes "
                "(0: off)")

    t = p.add_argument_group("training")
    for name, text in (
            ("epochs", "epochs"), ("batch_size", "tiles per step"),
            ("lr", "AdamW learning rate of the head"), ("weight_decay", "AdamW weight decay"),
            ("tiles_per_image", "training tiles per image per epoch"),
            ("items_per_epoch", "training tiles per epoch, the images in turn (default: "
             "--tiles-per-image of each)"),
            ("val_fraction", "share of the train folder held out for validation (0: a final "
             "fit on every image; the last epoch is kept, and the cell-separation settings "
             "come from --init's model)"),
            ("grad_clip", "clip the gradient norm to this (0: off)"),
            ("early_stopping", "stop after this many epochs without a better val Dice (0: off)"),
            ("seed", "seed of the split, the head and every random draw"),
            ("bce_weight", "BCE share of bce_dice"), ("dice_weight", "Dice share of bce_dice"),
            ("step_size", "epochs between learning-rate steps (--scheduler step)"),
            ("step_gamma", "learning-rate factor per step (--scheduler step)")):
        add_setting(t, TrainConfig, name, text)
    add_setting(t, TrainConfig, "loss", "the loss", "--loss", choices=LOSSES)
    add_setting(t, TrainConfig, "freeze", "what fine-tuning leaves as it was: the batch-norm "
                "statistics (norms), the encoder that reads the image (encoder), both, or none",
                "--freeze", choices=FREEZE)
    add_setting(t, TrainConfig, "scheduler", "learning-rate schedule", "--scheduler",
                choices=SCHEDULERS)

    a = p.add_argument_group("augmentation and cache")
    a.add_argument("--no-flips", dest="flips", action="store_false", help="no mirror flips")
    a.add_argument("--no-rotations", dest="rotations", action="store_false",
                   help="no 90-degree rotations")
    a.add_argument("--no-colour-jitter", "--no-color-jitter", dest="colour_jitter",
                   action="store_false", help="no brightness/contrast/saturation/hue jitter")
    add_setting(a, TrainConfig, "hue_jitter", "largest hue shift, in turns of the colour "
                "wheel; 0.5 draws any hue, for stains unlike the training smears'",
                metavar="TURNS")
    a.add_argument("--augment", type=_augmentations, default=list(AUGMENTATIONS),
                   metavar="NAMES", help="the microscope augmentations, joined by commas, "
                   f"all or none: {', '.join(AUGMENTATIONS)} (default: all)")
    add_setting(a, TrainConfig, "scale_range", "cells are drawn at 1/R to R times the run's "
                "cell diameter (with the scale augmentation), so a wrong size costs little",
                metavar="R")
    add_setting(a, TrainConfig, "cell_diameter", "px: the cell size the model works at, each "
                "training image scaled to it (default: --init's, else the training cells' "
                "median); smaller is faster", metavar="PX")
    a.add_argument("--no-size-head", dest="size_head", action="store_false",
                   help="do not train the network to read the cells' size (--diameter auto "
                   "then uses the classical estimate alone)")
    add_setting(a, TrainConfig, "size_weight", "weight of the size head's loss")
    a.add_argument("--no-common-size", dest="common_size", action="store_false",
                   help="train each image at its own scale, instead of scaling each so its "
                   "cells are at the run's median cell diameter")
    a.add_argument("--no-cache", dest="cache", action="store_false",
                   help="run the frozen backbone on every tile of every epoch")
    a.add_argument("--cache-dir", help="decoded images and features (default: "
                   "$BLOOMSEG_HOME/cache)")
    p.set_defaults(func=_train, parser=p)


def _train_classes(args: argparse.Namespace) -> int:
    from bloomseg.train.classifier import train_classes
    from bloomseg.train.config import ClassesConfig

    _interrupt_on_sigterm()
    settings = {f.name: getattr(args, f.name) for f in fields(ClassesConfig)
                if hasattr(args, f.name) and f.name not in ("data", "out")}
    config = ClassesConfig(**settings | {"data": args.data or [], "out": args.output})
    result = train_classes(config, progress=not args.quiet, overwrite=args.overwrite,
                           resume=args.resume)
    print(f"best val selection score {result.scores['selection']:.4f} (infected recall "
          f"{result.scores['infected_at_budget']:.3f} at the false-call budget) at epoch "
          f"{result.best_epoch}, infected threshold {result.infected_threshold}: "
          f"{result.run_dir / 'best.pt'} (ship it with: bloomseg export MODEL --classifier "
          f"{result.run_dir} -o FOLDER)")
    return EXIT_OK


def add_train_classes(commands: argparse._SubParsersAction) -> None:
    from bloomseg.train.config import ClassesConfig

    p = commands.add_parser(
        "train-classes", help="train a cell classifier on a segmentation model's cells",
        description="Segment every ROOT/train and validation image with --model, match its "
        "cells to the true boxes (IoU >= 0.5, one to one) and train a small CNN to name each "
        "cell: red cell, infected red cell by stage (ring, trophozoite, schizont, gametocyte), "
        "white cell, platelet. Each root's classes.txt names its box classes; a class a root "
        "does not name is unknown there, not absent. The probabilities are calibrated on the "
        "validation cells, and the infected threshold is the lowest that calls at most "
        "--max-false-calls of each dataset's uninfected red cells infected. Everything goes "
        "into the run folder -o/--output.")
    p.add_argument("--model", default="default", help="the segmentation model whose cells are "
                   "named (default: the shipped one)")
    p.add_argument("--data", action="append", metavar="ROOT", help="dataset root with "
                   "train/original, train/boxes and classes.txt, or of single-cell crops "
                   "ROOT/train/<class>/*.png (repeat for several)")
    p.add_argument("--uninfected", action="append", default=[], metavar="ROOT",
                   help="smears that hold no malaria (normal blood): a --data root (its red "
                   "cells, boxed or not, taught as uninfected, not as 'red or infected'), or a "
                   "plain folder of images whose cells, found by --model, may be anything but "
                   "infected (repeatable)")
    p.add_argument("--inputs", choices=("rgb", "relative"), default=ClassesConfig.inputs,
                   help="what the classifier sees of a cell's colour: each pixel's optical "
                   "density relative to its own field's cells (relative, the default: a stain "
                   "that shifts a whole lab shifts the reference too), or the normalised RGB")
    add_output(p, "run folder to create", "--out", required=True)
    p.add_argument("--resume", action="store_true", help="continue the run in -o from its last.pt")
    p.add_argument("--overwrite", action="store_true", help="start again in a used run folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or epoch lines")
    for name, text in (("epochs", "epochs"), ("batch_size", "cells per step"),
                       ("lr", "AdamW learning rate"), ("weight_decay", "AdamW weight decay"),
                       ("early_stopping", "stop after this many epochs without a better "
                        "selection score (0: off)"),
                       ("items_per_epoch", "cells per epoch, the same number of each class"),
                       ("views", "augmented views of each training image (other stains, "
                        "contrast, blur, noise, cell size)"),
                       ("width", "channels of the classifier's first stage"),
                       ("val_fraction", "share of a root's train images held out where it has "
                        "no val/ (its splits.json)"),
                       ("seed", "seed of every random draw"),
                       ("hard_negatives", "share of uninfected red cells in a batch made denser, "
                        "their pallor filled or blurred, and still taught as uninfected"),
                       ("max_false_calls", "share of each validation dataset's uninfected red "
                        "cells that may be called infected: the infected threshold is the lowest "
                        "that keeps to it (specificity first)")):
        add_setting(p, ClassesConfig, name, text)
    p.set_defaults(func=_train_classes)
