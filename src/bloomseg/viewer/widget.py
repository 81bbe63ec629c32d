"""The **Segment cells** dock widget: run a model on an image layer in a worker thread
(progress bar, Cancel), show its cells as a Labels layer with their table, Save the
layer, corrected by hand, as the files ``bloomseg predict`` writes, and train the model
on the saved corrections (:mod:`bloomseg.viewer.adapt`)."""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from bloomseg.errors import BloomsegError, ConfigError
from bloomseg.inference.options import AUTO, IMAGE_DIAMETER, THRESHOLD, SegmenterSpec
from bloomseg.viewer.adapt import TrainSection
from bloomseg.viewer.controls import error_text, row, start_worker
from bloomseg.viewer.layers import (
    LAYER_SUFFIX,
    META,
    SET,
    counts_text,
    image_stem,
    labels_layer,
    labels_name,
    table_diameter,
    table_frame,
)
from bloomseg.viewer.naming import ClassSection, apply_classes


class Cancelled(Exception):
    """A run stopped by its Cancel button."""


@dataclass
class Segmented:
    """What a run hands the viewer: the cells (or the mask, without cells) of an image."""

    image_name: str
    labels: np.ndarray
    features: object  # pandas DataFrame, the cell table
    diameter: dict
    seconds: float
    cells: bool
    qc: object | None = None  # the image's quality verdict (bloomseg.quality.Verdict)
    run: object | None = None  # the images run so far (bloomseg.quality.RunVerdict)


class _Signals(QObject):
    """Signals a worker thread emits; Qt delivers them in the viewer's thread."""

    step = Signal(str, int, int)  # what, done, of
    block = Signal(object)  # (block, blocks, core, core labels) of a large image


class SegmentWidget(QWidget):
    """Segment the selected image layer's cells, inspect them, correct them, save them.

    Args:
        napari_viewer: the viewer (napari passes it).
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.last: Segmented | None = None
        self._cancel = threading.Event()
        self._loaded: tuple[SegmenterSpec, object] | None = None  # one model held at a time
        # the images run with the loaded model: name -> (red-cell profile, own verdict)
        self._run_fields: dict[str, tuple] = {}
        self._filling: dict = {}
        self._signals = _Signals()
        self._signals.step.connect(self._show_step)
        self._signals.block.connect(self._show_block)

        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.addItem("default")
        self.model.setToolTip("default, a training run folder or an exported model folder")
        self.model.currentTextChanged.connect(self._model_changed)
        browse = QPushButton("…")
        browse.setMaximumWidth(32)
        browse.setToolTip("choose a model folder")
        browse.clicked.connect(self._browse_model)
        self.diameter = QLineEdit(AUTO)
        self.diameter.setToolTip("the cells' diameter in px, auto (estimated) or model (its own)")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.01, 0.99)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(THRESHOLD)
        self.cells = QCheckBox("one label per cell")
        self.cells.setChecked(True)
        self.classes = QCheckBox("name each cell")
        self.classes.setToolTip("red, infected by stage, white, platelet: where the model has a "
                                "cell classifier")
        self.classes.setChecked(True)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.status = QLabel("choose an image layer and Run")
        self.status.setWordWrap(True)
        self.counts = QLabel("")
        self.counts.setWordWrap(True)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("output folder")
        choose = QPushButton("…")
        choose.setMaximumWidth(32)
        choose.setToolTip("choose the output folder")
        choose.clicked.connect(self._browse_folder)
        self.overwrite = QCheckBox("overwrite")
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self._save_clicked)

        form = QFormLayout()
        form.addRow("model", row(self.model, browse))
        form.addRow("diameter", self.diameter)
        form.addRow("threshold", self.threshold)
        form.addRow("cells", self.cells)
        form.addRow("classes", self.classes)
        form.addRow("save to", row(self.folder, choose))
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(row(self.run_button, self.cancel_button))
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.counts)
        self.class_section = ClassSection(self)
        layout.addWidget(self.class_section)
        layout.addWidget(row(self.save_button, self.overwrite))
        self.training = TrainSection(self)
        self.folder.editingFinished.connect(self.training.refresh)
        layout.addWidget(self.training)
        layout.addStretch()
        self.viewer.layers.events.inserted.connect(self._inserted)
        for layer in self.viewer.layers:
            self._offer_classes(layer)

    # ---- settings -------------------------------------------------------------
    def spec(self) -> SegmenterSpec:
        """The model settings chosen, checked as the command line checks them.

        Raises:
            ConfigError: naming the setting that is wrong.
        """
        text = self.diameter.text().strip() or AUTO
        try:
            diameter = IMAGE_DIAMETER(text)
        except argparse.ArgumentTypeError as e:
            raise ConfigError(f"diameter: {e}") from None
        spec = SegmenterSpec(model=self.model.currentText().strip() or "default",
                             threshold=float(self.threshold.value()), diameter=diameter,
                             classes=self.classes.isChecked() and self.classes.isEnabled())
        spec.check()
        return spec

    def image_layer(self):
        """The image layer to segment: the selected one, else the only image layer.

        Raises:
            ConfigError: there is none, or several and none is selected.
        """
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            return active
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        if len(images) != 1:
            raise ConfigError("select the image layer to segment" if images
                              else "open an image first: there is no image layer")
        return images[0]

    # ---- running --------------------------------------------------------------
    def run(self):
        """Segment the image layer in a worker thread (the viewer stays live).

        Returns:
            The started worker, or None where the settings or the layer were refused (the
            status line says why).
        """
        if self.worker is not None:
            self.status.setText("a run is going on: wait for it or Cancel it")
            return None
        from bloomseg.outputs.options import LARGE_PIXELS

        folder = self.folder.text().strip()
        try:
            spec = self.spec()
            layer = self.image_layer()
            data = _image_data(layer)
            h, w = data.shape[:2]
            if h * w > LARGE_PIXELS and not folder:
                raise ConfigError(f"{layer.name} is large ({w}x{h}): it is segmented block by block "
                                  "into files; choose the output folder ('save to') first")
        except BloomsegError as e:
            self.status.setText(f"error: {e}")
            return None
        self._cancel.clear()
        self._filling = {}
        self.progress.setValue(0)
        self.status.setText(f"segmenting {layer.name}…")
        self.counts.setText("")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker = start_worker(self._segment, data, layer.name, spec, self.cells.isChecked(),
                                   folder, self.overwrite.isChecked(), returned=self._show,
                                   errored=self._failed, finished=self._finished)
        return self.worker

    def cancel(self) -> None:
        """Stop the run at its next step (a block of a large image, or a stage)."""
        self._cancel.set()
        self.status.setText("cancelling…")

    def _check(self, what: str, done: int, total: int) -> None:
        """Report a step (from the worker thread) and stop there if cancelled."""
        if self._cancel.is_set():
            raise Cancelled
        self._signals.step.emit(what, done, total)

    def _segmenter(self, spec: SegmenterSpec):
        if self._loaded is None or self._loaded[0] != spec:
            self._loaded = (spec, spec.load())
            self._run_fields = {}  # a run is judged with one model
        return self._loaded[1]

    def _segment(self, data, name: str, spec: SegmenterSpec, cells: bool, folder: str,
                 overwrite: bool) -> Segmented:
        """The run, in the worker thread."""
        from bloomseg.data.images import ArrayImage
        from bloomseg.inference.segmenter import STEPS
        from bloomseg.outputs.options import LARGE_PIXELS

        start = time.perf_counter()
        self._check("loading the model", 0, len(STEPS) + 1)
        segmenter = self._segmenter(spec)
        source = ArrayImage(data, name)
        if source.shape[0] * source.shape[1] > LARGE_PIXELS:
            return self._segment_large(segmenter, source, name, cells, folder, overwrite, start)
        image = source.read(0, source.shape[0], 0, source.shape[1])
        steps = iter(range(1, len(STEPS) + 1))
        result = segmenter.predict(image, instances=cells,
                                   step=lambda what: self._check(what, next(steps), len(STEPS) + 1))
        done = self._segmented(name, image, result, cells, time.perf_counter() - start)
        if done.qc is not None and segmenter.classifier is not None:
            done.qc, done.run = self._in_run(name, result.red_profile, done.qc,
                                             segmenter.classifier)
        return done

    def _in_run(self, name: str, profile, own, classifier) -> tuple:
        """The image's verdict beside the other images run with this model, as the
        command line judges a run's images, and the run's verdict."""
        from bloomseg.quality.run import in_run, run_status

        self._run_fields[name] = (profile, own)
        names = list(self._run_fields)
        run = run_status([self._run_fields[n][0] for n in names],
                         classifier.lab_centres.numpy(), classifier.lab_scatter.numpy())
        verdicts, run = in_run([self._run_fields[n][1] for n in names], run)
        return verdicts[names.index(name)], run

    def _segmented(self, name: str, image: np.ndarray, result, cells: bool,
                   seconds: float) -> Segmented:
        from bloomseg.cells.measure import measure_cells
        from bloomseg.outputs.summary import cell_table, diameter_fields
        from bloomseg.quality import judge

        diameter = diameter_fields(result.scale)
        if not cells:
            return Segmented(name, result.mask.astype(np.uint8), table_frame([], ()), diameter,
                             seconds, False)
        rows = measure_cells(result.labels, image)
        if result.classes is not None:
            rows = [r | t for r, t in zip(rows, result.classes)]
        features = table_frame(*cell_table(rows, diameter, result.classes is not None))
        return Segmented(name, result.labels, features, diameter, seconds, True,
                         judge(result))

    def _segment_large(self, segmenter, source, name: str, cells: bool, folder: str,
                       overwrite: bool, start: float) -> Segmented:
        """A large image, block by block into the output folder (as ``predict`` does),
        the layer filling as blocks finish; then the merged cells are read back."""
        import pandas as pd

        from bloomseg.data.images import read_labels
        from bloomseg.files import refuse_existing
        from bloomseg.outputs.large import segment_large
        from bloomseg.outputs.options import OutputOptions
        from bloomseg.outputs.run import output_paths, possible_outputs

        h, w = source.shape
        options = OutputOptions(cells=cells, large=True)
        stem = image_stem(name)
        refuse_existing(possible_outputs(Path(folder), stem, options), overwrite,
                        f"outputs of {stem} exist in {folder}; tick overwrite to replace them")
        outputs = output_paths(Path(folder), stem, options, large=True)

        def block(k: int, total: int, core: tuple, found: np.ndarray) -> None:
            self._check("blocks", k, total)
            self._signals.block.emit((name, (h, w), core, found))

        segment_large(segmenter, source, outputs, options, on_block=block)
        if not cells:
            from bloomseg.data.images import LazyImage

            with LazyImage(outputs["mask"], None) as mask:
                labels = (mask.read(0, h, 0, w)[..., 0] > 0).astype(np.uint8)
            return Segmented(name, labels, table_frame([], ()), {}, time.perf_counter() - start, False)
        features = pd.read_csv(outputs["cells"], keep_default_na=False)
        return Segmented(name, read_labels(outputs["labels"]), features, table_diameter(features),
                         time.perf_counter() - start, True)

    # ---- in the viewer's thread -------------------------------------------------
    def _show_step(self, what: str, done: int, total: int) -> None:
        self.progress.setMaximum(total)
        self.progress.setValue(done)
        self.status.setText(f"{what}…")

    def _show_block(self, payload: tuple) -> None:
        """Paint a finished block of a large image into its (provisional) cells layer."""
        name, shape, (r0, r1, c0, c1), found = payload
        layer = self._layer(labels_name(name))
        if layer is None or layer.data.shape != shape:
            self._remove(labels_name(name))
            layer = self.viewer.add_labels(np.zeros(shape, np.int32), name=labels_name(name),
                                           opacity=0.6)
        offset = self._filling.get(name, 0)
        found = found.astype(np.int32)
        layer.data[r0:r1, c0:c1] = np.where(found > 0, found + offset, 0)
        self._filling[name] = offset + int(found.max(initial=0))
        layer.refresh()

    def _show(self, done: Segmented) -> None:
        """Add or replace the image's cells layer, and show the counts."""
        self._remove(labels_name(done.image_name))
        if done.cells:
            data, settings, _ = labels_layer(done.labels, done.image_name, done.features,
                                             done.diameter)
        else:
            data, settings = done.labels, {"name": labels_name(done.image_name), "opacity": 0.6,
                                           "metadata": {META: {"image": done.image_name,
                                                               "diameter": done.diameter}}}
        self.viewer.add_labels(data, **settings)
        self.last = done
        self.progress.setValue(self.progress.maximum())
        size = done.diameter.get("diameter")
        at = f" at a cell diameter of {size} px ({done.diameter.get('diameter_source')})" if size else ""
        note = done.diameter.get("diameter_note")
        verdict = (f"\nquality: check it: {done.qc.text}" if done.qc.status == "check"
                   else "\nquality: ok") if done.qc is not None else ""
        if done.run is not None:
            verdict += (f"\nthe classes of the {len(self._run_fields)} image(s) run with this "
                        f"model: {done.run.text}")
        self.status.setText(f"{done.image_name}: done in {done.seconds:.1f} s{at}" +
                            (f"\n{note}" if note else "") + verdict)
        self.counts.setText(counts_text(done.features) if done.cells else
                            f"cell pixels: {100 * float(np.mean(done.labels > 0)):.1f}%")

    def _failed(self, error: Exception) -> None:
        self.status.setText("cancelled: nothing was changed" if isinstance(error, Cancelled)
                            else error_text(error))
        self.progress.setValue(0)

    def _finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _layer(self, name: str):
        return next((layer for layer in self.viewer.layers if layer.name == name), None)

    def _inserted(self, event) -> None:
        self._offer_classes(event.value)

    def _offer_classes(self, layer) -> None:
        """A cells layer (the widget's, or one read from outputs) has its cells picked
        and named by the Cell classes section."""
        from napari.layers import Labels

        if isinstance(layer, Labels) and META in layer.metadata:
            self.class_section.attach(layer)

    def _remove(self, name: str) -> None:
        layer = self._layer(name)
        if layer is not None:
            self.viewer.layers.remove(layer)

    # ---- saving ---------------------------------------------------------------
    def cells_layer(self):
        """The cells layer to save: the selected Labels layer, else the one of the image
        layer segmented last.

        Raises:
            ConfigError: there is none.
        """
        from napari.layers import Labels

        active = self.viewer.layers.selection.active
        if isinstance(active, Labels):
            return active
        if self.last is not None and (layer := self._layer(labels_name(self.last.image_name))):
            return layer
        raise ConfigError("select the cells layer to save (a Labels layer)")

    def save(self, folder: str | Path | None = None, overwrite: bool | None = None) -> dict:
        """Write the files ``predict`` writes for the cells layer's image (labels TIFF,
        cells CSV, GeoJSON, mask, overlay) from the layer as it is now: cells painted,
        erased, split or merged by hand are measured anew, and named anew where the model
        has a classifier and classes are on, but for the classes set by hand (the Cell
        classes section), which are written as set.

        Args:
            folder: the output folder (default: the widget's).
            overwrite: replace files there (default: the widget's box).

        Returns:
            The files written, by kind.

        Raises:
            BloomsegError: no folder, no cells layer or image, or outputs exist.
        """
        from skimage.segmentation import relabel_sequential

        from bloomseg.data.images import ArrayImage
        from bloomseg.outputs.run import save_corrected

        folder = str(folder if folder is not None else self.folder.text()).strip()
        if not folder:
            raise ConfigError("choose the output folder ('save to') first")
        layer = self.cells_layer()
        meta = layer.metadata.get(META, {})
        name = meta.get("image") or layer.name.removesuffix(LAYER_SUFFIX)
        image_layer = self._layer(name)
        if image_layer is None:
            raise ConfigError(f"the image of {layer.name!r} ({name!r}) is not open: it is needed "
                              "to measure the cells")
        data = _image_data(image_layer)
        source = ArrayImage(data, name)
        image = source.read(0, source.shape[0], 0, source.shape[1])
        labels = np.asarray(layer.data)
        if labels.shape != image.shape[:2]:
            raise ConfigError(f"{layer.name!r} is {labels.shape[1]}x{labels.shape[0]} but its image "
                              f"is {image.shape[1]}x{image.shape[0]}")
        labels, forward, _ = relabel_sequential(labels.astype(np.int64))  # erased cells leave no gaps
        diameter = {"diameter": "", "diameter_source": "", "diameter_note": ""} | \
            meta.get("diameter", {})
        types = None
        if self.classes.isChecked():
            segmenter = self._segmenter(self.spec())
            if segmenter.classifier is not None:
                size = float(diameter["diameter"]) if diameter["diameter"] not in ("", None) else None
                types = segmenter.classes_of(image, labels, size)
        set_by_hand = meta.get(SET, {})
        if set_by_hand:
            if types is None:
                raise ConfigError("classes were set by hand, but classes are off: tick 'name "
                                  "each cell' (a model with a cell classifier) to save them")
            types = apply_classes(types, set_by_hand, forward)
        stem = image_stem(name)
        written = save_corrected(image, labels, types, diameter, folder, stem,
                                 self.overwrite.isChecked() if overwrite is None else overwrite,
                                 f"outputs of {stem} exist in {folder}; tick overwrite to replace them",
                                 image_too=True)
        self.status.setText(f"saved {len(written)} files of {stem} in {folder}")
        self.training.refresh()
        return written

    def use_model(self, name: str) -> None:
        """Make ``name`` the model the next Run uses (offered in the list from then on)."""
        if self.model.findText(name) < 0:
            self.model.addItem(name)
        self.model.setCurrentText(name)

    def _save_clicked(self) -> None:
        try:
            self.save()
        except BloomsegError as e:
            self.status.setText(f"error: {e}")

    def _model_changed(self, text: str) -> None:
        """Offer classes only where the model has a classifier (a model that cannot be
        found is said on Run)."""
        from bloomseg.model.files import carries_classifier, resolve_model

        try:
            named = carries_classifier(resolve_model(text.strip() or "default"))
        except BloomsegError:
            named = True
        self.classes.setEnabled(named)
        self.classes.setToolTip("red, infected by stage, white, platelet" if named else
                                "this model has no cell classifier")

    def _browse_model(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "model folder")
        if chosen:
            self.model.setCurrentText(chosen)

    def _browse_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "output folder")
        if chosen:
            self.folder.setText(chosen)
            self.training.refresh()


def _image_data(layer):
    """An image layer's pixels for bloomseg: RGB(A) or grey, 2D.

    Raises:
        ConfigError: a stack, a multiscale pyramid's levels aside, or channels not RGB.
    """
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(data.shape)
    if len(shape) == 2 or (len(shape) == 3 and layer.rgb):
        return data
    raise ConfigError(f"layer {layer.name!r} of shape {shape} is not one 2D RGB or grey image")
