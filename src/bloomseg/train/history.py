"""A training run's per-epoch history: JSON, CSV and the curves figure."""

from __future__ import annotations

from pathlib import Path

from bloomseg.figures import pyplot, save_figure
from bloomseg.files import save_csv, save_json

COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "val_iou", "lr", "seconds",
           "backbone_tiles")
"""One row per epoch. ``backbone_tiles``: tiles the backbone ran on in that epoch
(0 once every feature the epoch needs is cached)."""


def write_history(run_dir: str | Path, rows: list[dict]) -> None:
    """Write ``history.json`` and ``history.csv`` (atomically)."""
    run_dir = Path(run_dir)
    save_json(run_dir / "history.json", rows)
    save_csv(run_dir / "history.csv", rows, COLUMNS)


def plot_curves(rows: list[dict], path: str | Path, title: str = "") -> None:
    """Training and validation loss, and validation Dice/IoU, per epoch, as a PNG."""
    plt = pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    validated = rows[0]["val_dice"] is not None  # None: a run with nothing held out
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    if validated:
        ax_loss.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    if validated:
        ax_score.plot(epochs, [r["val_dice"] for r in rows], "o-", label="Dice")
        ax_score.plot(epochs, [r["val_iou"] for r in rows], "s-", label="IoU")
        best = max(rows, key=lambda r: r["val_dice"])
        ax_score.axvline(best["epoch"], color="grey", linestyle=":",
                         label=f"best: epoch {best['epoch']}, Dice {best['val_dice']:.4f}")
        ax_score.legend(loc="lower right")
    else:
        ax_score.text(0.5, 0.5, "no validation images\n(the last epoch is kept)",
                      ha="center", va="center", transform=ax_score.transAxes)
    ax_score.set(xlabel="epoch", ylabel="score", title="validation")
    for ax in (ax_loss, ax_score):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
