"""A training run's per-epoch history: JSON, CSV and the curves figure."""

from __future__ import annotations

from pathlib import Path

from bloomseg.figures import pyplot, save_figure
from bloomseg.files import save_csv, save_json

COLUMNS = ("epoch", "train_loss", "val_loss", "val_score", "val_dice", "val_iou", "lr",
           "seconds", "backbone_tiles")
"""One row per epoch. ``val_score``: the mean of each dataset's score (its pixel Dice, or
its cell F1 against boxes where it has no masks), what the best epoch is chosen by;
``val_dice``, ``val_iou``: the mean over datasets with masks. ``backbone_tiles``: tiles the
backbone ran on in that epoch (0 once every feature the epoch needs is cached). The CSV
adds ``<dataset>_<score>`` columns, one per dataset and score."""


def score_of(row: dict) -> float | None:
    """What an epoch is judged by: its ``val_score`` (its ``val_dice`` in the rows of
    runs made before there was one)."""
    return row.get("val_score", row["val_dice"])


def write_history(run_dir: str | Path, rows: list[dict]) -> None:
    """Write ``history.json`` and ``history.csv`` (atomically)."""
    run_dir = Path(run_dir)
    save_json(run_dir / "history.json", rows)
    flat = [{k: v for k, v in row.items() if k != "val_datasets"}
            | {f"{name}_{score}": value for name, scores in row.get("val_datasets", {}).items()
               for score, value in scores.items() if value is not None} for row in rows]
    extra = list(dict.fromkeys(k for row in flat for k in row if k not in COLUMNS))
    save_csv(run_dir / "history.csv", flat, [*COLUMNS, *extra])


def plot_curves(rows: list[dict], path: str | Path, title: str = "") -> None:
    """Training and validation loss, validation Dice/IoU (or each dataset's score), and
    the size head's validation error where the model has one, per epoch, as a PNG."""
    plt = pyplot()
    epochs = [r["epoch"] for r in rows]
    datasets = rows[0].get("val_datasets") or {}
    sized = [n for n, v in datasets.items() if v.get("size_error") is not None]
    fig, axes = plt.subplots(1, 3 if sized else 2, figsize=(15 if sized else 10, 4),
                             constrained_layout=True)
    ax_loss, ax_score = axes[:2]
    if sized:  # the network's reading of the cells' size
        for name in sized:
            axes[2].plot(epochs, [100 * r["val_datasets"][name]["size_error"] for r in rows],
                         ".-", label=name)
        axes[2].set(xlabel="epoch", ylabel="median error, %", title="size reading")
        axes[2].legend()
        axes[2].grid(alpha=0.3)
    validated = score_of(rows[0]) is not None  # None: a run with nothing held out
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    if validated:
        ax_loss.plot(epochs, [r["val_loss"] for r in rows], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    if validated:
        if len(datasets) > 1:
            for name in datasets:
                for score in ("dice", "f1"):
                    values = [r["val_datasets"][name][score] for r in rows]
                    if values[0] is not None:
                        ax_score.plot(epochs, values, ".-", label=f"{name} {score}")
        if rows[0]["val_dice"] is not None and len(datasets) <= 1:
            ax_score.plot(epochs, [r["val_dice"] for r in rows], "o-", label="Dice")
            ax_score.plot(epochs, [r["val_iou"] for r in rows], "s-", label="IoU")
        elif len(datasets) == 1:
            ax_score.plot(epochs, [score_of(r) for r in rows], "o-", label="cell F1 (boxes)")
        best = max(rows, key=score_of)
        ax_score.axvline(best["epoch"], color="grey", linestyle=":",
                         label=f"best: epoch {best['epoch']}, score {score_of(best):.4f}")
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
