"""What a few-image fine-tune (``bloomseg train --adapt``) leaves for use: an exported
model folder with the classifier of the model it came from and a model card that says
what it was adapted from and on which images."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from bloomseg import __version__
from bloomseg.files import atomic_output
from bloomseg.model.files import PACKAGED, carries_classifier, export_model, read_checkpoint_file
from bloomseg.train.config import ADAPT, TrainConfig
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


def write_adapted_model(run_dir: Path, cfg: TrainConfig, images: list[TrainImage],
                        seconds: float) -> Path:
    """Export the run's best.pt to ``run_dir/model`` with the start model's classifier
    (it works at the same cell size, which fine-tuning keeps) and ``MODEL_CARD.md``.

    Args:
        run_dir: the finished run.
        cfg: its settings (``init`` is the start model).
        images: the images it learned from.
        seconds: how long the training took.

    Returns:
        The exported folder, a model ``bloomseg predict`` and napari take.
    """
    folder = run_dir / MODEL_DIR
    start = Path(cfg.init)
    classifier = start if carries_classifier(start) else None
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
- Cell classes: {"the start model's classifier, unchanged" if classifier else "none"}.

## What to keep in mind

- It has seen {len(images)} image(s) of your microscope: check its output on a few images
  it has not seen (`bloomseg evaluate` on images you corrected, or by eye in napari)
  before you rely on it.
- It is meant for smears like those above; on other microscopes use the start model.
"""
    with atomic_output(folder / "MODEL_CARD.md", "w", encoding="utf-8") as f:
        f.write(card)
    return folder
