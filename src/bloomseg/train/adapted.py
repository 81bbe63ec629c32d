"""What a few-image fine-tune (``bloomseg train --adapt``) leaves for use: an exported
model folder with the classifier of the model it came from and a model card that says
what it was adapted from and on which images."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from bloomseg import __version__
from bloomseg.files import atomic_output
from bloomseg.model.files import PACKAGED, carries_classifier, export_model, read_checkpoint_file
from bloomseg.train.config import ADAPT, TrainConfig
from bloomseg.train.corrected import ClassesAdapted
from bloomseg.train.examples import TrainImage

FROZEN = {
    "encoder": "The encoder (the part that reads the image) was left as it was, so what the "
               "start model learned of other microscopes stays; the decoder and the size head "
               "learned.",
    "encoder+norms": "The encoder (the part that reads the image) and every batch norm's "
                     "statistics were left as they were, so what the start model learned of "
                     "other microscopes stays; the decoder's weights and the size head learned.",
    "norms": "Every batch norm's statistics were left as they were, so a few images' colours "
             "do not shift what each layer reads; every layer's weights learned.",
    "none": "Every layer learned.",
}
"""What the card says of each ``--freeze`` (every one of ``FREEZE``)."""

MODEL_DIR = "model"
"""The adapted model's folder inside the run folder."""


def source_name(init: str | Path) -> str:
    """The start model as a reader knows it, never as a path of this machine: a shipped
    model by its name, else its folder's (or file's) name."""
    path = Path(init).resolve()
    if path.parent == PACKAGED.resolve():
        return f"{path.name} (shipped with bloomseg {__version__})"
    return path.parent.name if path.name in ("best.pt", "last.pt") else path.name


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


def classes_section(classes: ClassesAdapted | None, start_has: bool) -> str:
    """The model card's section on the cell classes: kept as they were, or adapted to
    the user's named cells (which calls were corrected, on how many cells and images,
    the threshold, and what the classifier's memory of its training labs measured
    before and after)."""
    if classes is None:
        return ("## Cell classes\n\nThe start model's classifier, unchanged"
                if start_has else "## Cell classes\n\nNone") + " (no cell table named classes).\n"
    changes = "\n".join(f"- {k.replace('_', ' ')}: {n} cell(s)"
                        for k, n in sorted(classes.corrected.items(), key=lambda kv: -kv[1]))
    check = classes.check
    still = (f" {check.still_called} cell(s) named not infected are still called infected: the "
             "threshold was not raised above them (that would have cost more than a tenth of "
             "the infected cells found on the training labs, or it is at its highest); "
             "correct more images." if check.still_called else "")
    rows = "\n".join(
        f"| {lab} | {_pct(v['infected_found'])} | {_pct(classes.memory_after[lab]['infected_found'])} "
        f"| {_pct(v['red_called_infected'])} | "
        f"{_pct(classes.memory_after[lab]['red_called_infected'])} |"
        for lab, v in classes.memory_before.items())
    how = ("each step beside cells of the labs it learnt" if rows else
           "nothing replayed: the start classifier keeps no memory of its training cells")
    measured = ("\n\nOn the validation cells of the labs the classifier was trained on (kept "
                "in its memory), at the threshold of each:\n\n| lab | infected found, before | "
                "after | red cells called infected, before | after |\n| --- | --- | --- | --- "
                f"| --- |\n{rows}\n" if rows else
                "\n\nWhat it still knows of other labs was not measured (no memory).\n")
    return f"""## Cell classes

Adapted to {classes.cells} named cells of {len(classes.fields)} image(s) in {classes.seconds:.0f} s
(the last layer only, {how}, drawn back to where it started). The calls corrected (what
the start classifier called them -> what you said):

{changes or "- none: every named cell was called as named (confirmed)"}

- Called as you named them: {classes.agreement_before:.1%} before, {classes.agreement_after:.1%} after.
- Infected threshold {check.start} before, {check.threshold} after (checked again on your
  cells{" and the training labs' validation cells" if rows else ""}).{still}{measured}"""


def write_adapted_model(run_dir: Path, cfg: TrainConfig, images: list[TrainImage],
                        seconds: float, classes: ClassesAdapted | None = None) -> Path:
    """Export the run's best.pt to ``run_dir/model`` with the start model's classifier,
    or the one adapted to the images' named cells (it works at the same cell size, which
    fine-tuning keeps), and ``MODEL_CARD.md``.

    Args:
        run_dir: the finished run.
        cfg: its settings (``init`` is the start model).
        images: the images it learned from.
        seconds: how long the training took.
        classes: the classifier adapted to the images' named cells, if any.

    Returns:
        The exported folder, a model ``bloomseg predict`` and napari take.
    """
    folder = run_dir / MODEL_DIR
    start = Path(cfg.init)
    classifier = classes.classifier if classes else start if carries_classifier(start) else None
    export_model(run_dir, folder, overwrite=True, classifier=classifier)
    instances = read_checkpoint_file(run_dir / "best.pt").get("instances") or {}
    kept = instances == (read_checkpoint_file(start).get("instances") or {})
    cells = sum(0 if img.boxes is None else len(img.boxes) for img in images)
    listed = "\n".join(f"- `{img.sample.image.name}`"
                       f"{'' if img.boxes is None else f': {len(img.boxes)} cells'}"
                       for img in images)
    recipe = ", ".join(f"{k} {getattr(cfg, k)}" for k in ADAPT if k != "init")
    card = f"""# Adapted model

Fine-tuned from **{source_name(start)}** on {len(images)} image(s) with {cells} labelled
cells, by `bloomseg train --adapt` (bloomseg {__version__}) on
{datetime.now(timezone.utc).strftime("%Y-%m-%d")}, in {seconds / 60:.1f} minutes.

## Images it learned from

{listed}

## How

- The settings: {recipe}; cells at {cfg.cell_diameter} px, as in the start model.
- {FROZEN[cfg.freeze]}
- Cell separation tuned again on {"the held-out images" if cfg.hold_out else
   "these images (nothing was held out)"}: {"the start model's settings kept, as none "
   "found the cells better by enough" if kept else "new settings"} ({instances}).

{classes_section(classes, carries_classifier(start))}
## What to keep in mind

- It has seen {len(images)} image(s) of your microscope: check its output on a few images
  it has not seen (`bloomseg evaluate` on images you corrected, or by eye in napari)
  before you rely on it.
- It is meant for smears like those above; on other microscopes use the start model.
"""
    with atomic_output(folder / "MODEL_CARD.md", "w", encoding="utf-8") as f:
        f.write(card)
    return folder


def write_classes_model(init: str | Path, run_dir: Path, classes: ClassesAdapted) -> Path:
    """Export ``init``'s segmentation, unchanged, with the classifier adapted to named
    cells (``bloomseg train --adapt-classes-only``) to ``run_dir/model``, with
    ``MODEL_CARD.md``.

    Returns:
        The exported folder.
    """
    from bloomseg.model.files import resolve_model

    folder = run_dir / MODEL_DIR
    export_model(init, folder, overwrite=True, classifier=classes.classifier)
    listed = "\n".join(f"- `{name}`" for name in classes.fields)
    card = f"""# Adapted model

The segmentation of **{source_name(resolve_model(init))}**, unchanged; its cell classes
adapted by `bloomseg train --adapt-classes-only` (bloomseg {__version__}) on
{datetime.now(timezone.utc).strftime("%Y-%m-%d")}.

## Images it learned from

{listed}

{classes_section(classes, True)}
## What to keep in mind

- It has seen {len(classes.fields)} image(s) of your microscope: check its classes on a
  few images it has not seen (by eye in napari) before you rely on them.
- It is meant for smears like those above; on other microscopes use the start model.
"""
    with atomic_output(folder / "MODEL_CARD.md", "w", encoding="utf-8") as f:
        f.write(card)
    return folder


def adapt_model_classes(data: list[str | Path], out: str | Path, init: str | Path = "default",
                        overwrite: bool = False,
                        log: Callable[[str], None] = print) -> Path:
    """``bloomseg train --adapt-classes-only``: adapt ``init``'s cell classifier to the
    classes named in ``data``'s cell tables, its segmentation unchanged (in seconds).

    Args:
        data: folders of images, ``<stem>_labels.tif`` and ``<stem>_cells.csv``.
        out: the run folder: ``classifier.pt`` and the model in ``model/``.
        init: the start model.
        overwrite: replace an adapted model already there.
        log: told of each step.

    Returns:
        The exported model folder.

    Raises:
        OutputExistsError: the run folder holds one and ``overwrite`` is False.
        DataError: no cell table there names a class.
    """
    from bloomseg.errors import DataError
    from bloomseg.files import refuse_existing
    from bloomseg.model.files import resolve_model
    from bloomseg.train.corrected import CELLS_END, CLASSIFIER_FILE, adapt_classes

    start = str(resolve_model(init).resolve())
    run = Path(out)
    refuse_existing([run / CLASSIFIER_FILE, run / MODEL_DIR], overwrite)
    run.mkdir(parents=True, exist_ok=True)
    classes = adapt_classes(start, data, run, log)
    if classes is None:
        raise DataError(f"{', '.join(map(str, data))}: no image there has its <stem>_labels.tif "
                        f"and a <stem>{CELLS_END} with a class column (Save in napari writes them)")
    return write_classes_model(start, run, classes)
