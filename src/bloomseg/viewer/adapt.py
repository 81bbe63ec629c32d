"""The **Train on corrected** section of the Segment cells widget: fine-tune the model on
the images saved (corrected) in the output folder, and its cell classifier on the classes
their tables name, in a worker thread, with progress, the time left and Cancel; the
adapted model is then the one Run uses."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import datetime
from pathlib import Path

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QGroupBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from bloomseg.errors import BloomsegError, ConfigError
from bloomseg.viewer.controls import error_text, row, start_worker

IMAGES = "images"
"""The run folder's copy of the images it learned from (and their labels)."""


class Cancelled(Exception):
    """Training stopped by its Cancel button."""


class _Signals(QObject):
    step = Signal(int, int, float)  # steps done, in all, seconds since the start


def saved_images(folder: str | Path) -> list[tuple[Path, ...]]:
    """(image, labels, and the cell table where there is one) of every image saved with
    its cells in ``folder`` (Save writes them), by name; none where the folder holds none
    or does not exist."""
    from bloomseg.data.dataset import LABELS_END, is_flat, scan_split
    from bloomseg.train.corrected import CELLS_END

    folder = Path(folder)
    if not folder.is_dir() or not is_flat(folder):
        return []
    scan = scan_split(folder, "train", need_mask=False)
    return [(s.image, folder / f"{s.stem}{LABELS_END}")
            + ((table,) if (table := folder / f"{s.stem}{CELLS_END}").is_file() else ())
            for s in scan.samples]


def left(done: int, total: int, seconds: float) -> str:
    """The time left at the rate so far, as the status says it (``about 1:40 left``)."""
    if not done:
        return "starting"
    rest = round(seconds / done * (total - done))
    return f"about {rest // 60}:{rest % 60:02d} left"


class TrainSection(QGroupBox):
    """Fine-tune the widget's model on chosen saved images (``train --adapt``).

    Args:
        owner: the Segment cells widget (its output folder and model).
    """

    def __init__(self, owner) -> None:
        super().__init__("Train on corrected")
        self.owner = owner
        self.worker = None
        self.run_dir: Path | None = None
        self.settings: dict = {}  # TrainConfig settings beside the recipe's (tests: shorter)
        self._cancel = threading.Event()
        self._signals = _Signals()
        self._signals.step.connect(self._show_step)

        self.images = QListWidget()
        self.images.setToolTip("the images saved in the output folder: tick those to learn from")
        refresh = QPushButton("↻")
        refresh.setMaximumWidth(32)
        refresh.setToolTip("list the saved images again")
        refresh.clicked.connect(self.refresh)
        self.run_folder = QLineEdit()
        self.run_folder.setPlaceholderText("run folder (default: save to/adapted-DATE)")
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.status = QLabel("correct cells, Save, then tick the saved images and Train")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(row(QLabel("saved images"), refresh))
        layout.addWidget(self.images)
        layout.addWidget(self.run_folder)
        layout.addWidget(row(self.train_button, self.cancel_button))
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

    def refresh(self) -> None:
        """List the images saved in the output folder, those ticked before kept ticked
        (a new one ticked)."""
        unticked = {i.text() for i in self._items() if i.checkState() != Qt.Checked}
        self.images.clear()
        for image, *_ in saved_images(self.owner.folder.text().strip()):
            item = QListWidgetItem(image.name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Unchecked if image.name in unticked else Qt.Checked)
            self.images.addItem(item)

    def chosen(self) -> list[tuple[Path, ...]]:
        """The ticked saved images, with their labels and cell tables."""
        names = {i.text() for i in self._items() if i.checkState() == Qt.Checked}
        return [pair for pair in saved_images(self.owner.folder.text().strip())
                if pair[0].name in names]

    def _items(self) -> list[QListWidgetItem]:
        return [self.images.item(i) for i in range(self.images.count())]

    # ---- training ---------------------------------------------------------------
    def start(self):
        """Train on the ticked images in a worker thread.

        Returns:
            The started worker, or None where nothing could start (the status says why).
        """
        if self.worker is not None:
            self.status.setText("training is going on: wait for it or Cancel it")
            return None
        try:
            pairs = self.chosen()
            if not pairs:
                raise ConfigError("no saved image is ticked: Save corrected cells to the output "
                                  "folder, then tick them here")
            folder = Path(self.owner.folder.text().strip())
            text = self.run_folder.text().strip()
            run = Path(text) if text else folder / f"adapted-{datetime.now():%Y%m%d-%H%M%S}"
            if (run / "config.json").exists():
                raise ConfigError(f"{run} holds a training run already: name another run folder")
            init = self.owner.spec().model
        except BloomsegError as e:
            self.status.setText(f"error: {e}")
            return None
        self._cancel.clear()
        self.run_dir = run
        self.progress.setValue(0)
        self.status.setText(f"training on {len(pairs)} image(s) from {init}…")
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker = start_worker(self._train, pairs, run, init, dict(self.settings),
                                   returned=self._trained, errored=self._failed,
                                   finished=self._finished)
        return self.worker

    def cancel(self) -> None:
        """Stop training at its next step (the run can be resumed from the command line)."""
        self._cancel.set()
        self.status.setText("cancelling…")

    def _train(self, pairs: list[tuple[Path, ...]], run: Path, init: str,
               settings: dict) -> Path:
        """The training, in the worker thread; returns the adapted model's folder."""
        from bloomseg.train import TrainConfig, train

        images = run / IMAGES
        images.mkdir(parents=True, exist_ok=True)
        for pair in pairs:  # copies: the run keeps what it learned from
            for path in pair:
                shutil.copyfile(path, images / path.name)
        start = time.perf_counter()

        def step(done: int, total: int) -> None:
            if self._cancel.is_set():
                raise KeyboardInterrupt
            self._signals.step.emit(done, total, time.perf_counter() - start)

        config = TrainConfig.adapted(**{"data": [str(images)], "out": str(run), "init": init}
                                     | settings)
        try:
            return train(config, progress=False, listener=step).model_dir
        except KeyboardInterrupt:
            raise Cancelled from None

    # ---- in the viewer's thread -------------------------------------------------
    def _show_step(self, done: int, total: int, seconds: float) -> None:
        self.progress.setMaximum(total)
        self.progress.setValue(done)
        self.status.setText(f"training: step {done} of {total}, {left(done, total, seconds)}")

    def _trained(self, model: Path) -> None:
        self.progress.setValue(self.progress.maximum())
        self.owner.use_model(str(model))
        self.status.setText(f"adapted model ready: {model} (its MODEL_CARD.md says how it "
                            "was made); Run now uses it")

    def _failed(self, error: Exception) -> None:
        self.status.setText(f"cancelled: go on with `bloomseg train --resume {self.run_dir}` (the "
                            "model Run uses is unchanged)" if isinstance(error, Cancelled)
                            else error_text(error))
        self.progress.setValue(0)

    def _finished(self) -> None:
        self.worker = None
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

