"""The Segment cells widget: the command line's cells, Cancel, Save after a correction
of cells and classes, training on the saved corrections, large images block by block,
settings refused by name."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import need_viewer

need_viewer()

from bloomseg.data.images import read_image, read_labels  # noqa: E402
from bloomseg.viewer.widget import SegmentWidget  # noqa: E402

WAIT_MS = 120_000


def _table(path) -> tuple[list[str], list[dict]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def _widget(make_napari_viewer, smear_file):
    viewer = make_napari_viewer()
    viewer.add_image(read_image(smear_file), name=smear_file.stem, rgb=True)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def _run(widget, qtbot) -> None:
    assert widget.run() is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)


def test_the_widget_finds_the_cells_the_command_line_finds(make_napari_viewer, qtbot, smear_file,
                                                           cli_outputs):
    viewer, widget = _widget(make_napari_viewer, smear_file)
    _run(widget, qtbot)
    layer = viewer.layers[f"{smear_file.stem} cells"]
    columns, rows = _table(cli_outputs / f"{smear_file.stem}_cells.csv")
    assert len(rows) > 5
    assert int(layer.data.max()) == len(np.unique(layer.data)) - 1 == len(rows)
    np.testing.assert_array_equal(layer.data, read_labels(cli_outputs / f"{smear_file.stem}_labels.tif"))
    assert list(layer.features.columns) == columns
    assert [str(c) for c in layer.features["class"]] == [r["class"] for r in rows]
    assert [int(a) for a in layer.features["area"]] == [int(r["area"]) for r in rows]
    assert widget.counts.text().startswith(f"{len(rows)} cells")
    assert "parasitemia" in widget.counts.text()
    assert widget.progress.value() == widget.progress.maximum()
    assert f"at a cell diameter of {rows[0]['image_diameter']} px (estimated)" in widget.status.text()
    # the same quality verdict as the command line's
    qc = _table(cli_outputs / "summary.csv")[1][0]["qc"]
    assert qc in ("ok", "check")
    assert ("quality: ok" if qc == "ok" else "quality: check it") in widget.status.text()
    # the run's classes: one image is too short a run to judge, and it says so
    assert "the classes of the 1 image(s) run with this model: not judged" in \
        widget.status.text()


def test_cancel_stops_a_run_and_changes_nothing(make_napari_viewer, qtbot, smear_file):
    viewer, widget = _widget(make_napari_viewer, smear_file)
    assert widget.run() is not None
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.status.text().startswith("cancelled")
    assert [layer.name for layer in viewer.layers] == [smear_file.stem]
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_save_after_erasing_a_cell_writes_one_cell_fewer(make_napari_viewer, qtbot, smear_file,
                                                         tmp_path):
    viewer, widget = _widget(make_napari_viewer, smear_file)
    _run(widget, qtbot)
    layer = viewer.layers[f"{smear_file.stem} cells"]
    n = int(layer.data.max())
    layer.data = np.where(layer.data == 2, 0, layer.data)  # the eraser on cell 2
    written = widget.save(tmp_path)
    labels = read_labels(written["labels"])
    assert labels.max() == n - 1 and len(np.unique(labels)) == n  # numbered without a gap
    columns, rows = _table(written["cells"])
    assert len(rows) == n - 1 and [int(r["id"]) for r in rows] == list(range(1, n))
    assert "class" in columns
    assert len(json.loads(written["geojson"].read_text())["features"]) == n - 1
    mask = read_image(written["mask"])[..., 0] > 0
    np.testing.assert_array_equal(mask, labels > 0)
    # nothing is replaced unless asked
    with pytest.raises(Exception, match="tick overwrite"):
        widget.save(tmp_path)
    widget.folder.setText(str(tmp_path))
    widget._save_clicked()  # the button says so in the status line, no traceback
    assert widget.status.text().startswith("error:") and "tick overwrite" in widget.status.text()
    widget.save(tmp_path, overwrite=True)


def test_a_large_image_is_segmented_block_by_block_into_files(make_napari_viewer, qtbot, smear_file,
                                                              tmp_path, monkeypatch):
    from bloomseg.cli import main

    monkeypatch.setattr("bloomseg.outputs.options.LARGE_PIXELS", 1000)
    viewer, widget = _widget(make_napari_viewer, smear_file)
    assert widget.run() is None and "choose the output folder" in widget.status.text()
    widget.folder.setText(str(tmp_path / "widget"))
    _run(widget, qtbot)
    assert widget._filling  # the layer was shown filling, block by block
    layer = viewer.layers[f"{smear_file.stem} cells"]
    cli = tmp_path / "cli"
    assert main(["predict", "default", str(smear_file), "-o", str(cli), "-q", "--large", "--cells"]) == 0
    expected = read_labels(cli / f"{smear_file.stem}_labels.tif")
    np.testing.assert_array_equal(layer.data, expected)
    assert (tmp_path / "widget" / f"{smear_file.stem}_labels.tif").is_file()
    assert len(layer.features) == expected.max()


def test_bad_settings_and_no_image_are_said_in_the_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    assert widget.run() is None
    assert widget.status.text() == "error: open an image first: there is no image layer"
    viewer.add_image(np.zeros((40, 50, 3), np.uint8), rgb=True)
    widget.diameter.setText("tiny")
    assert widget.run() is None
    assert widget.status.text().startswith("error: diameter: 'tiny' is not")
    widget.diameter.setText("auto")
    widget.model.setCurrentText("no/such/model")
    assert widget.run() is None and "no/such/model" in widget.status.text()
    viewer.add_image(np.zeros((3, 40, 50), np.uint8), name="stack")
    widget.model.setCurrentText("default")
    assert widget.run() is None and "not one 2D RGB or grey image" in widget.status.text()


def test_classes_are_offered_only_for_a_model_with_a_classifier(make_napari_viewer, qtbot, smear_file,
                                                               tmp_path):
    from bloomseg.model.files import CLASSIFIER_FILES, export_model

    plain = export_model("default", tmp_path / "plain")
    for name in CLASSIFIER_FILES:
        (plain / name).unlink()
    viewer, widget = _widget(make_napari_viewer, smear_file)
    widget.model.setCurrentText(str(plain))
    assert not widget.classes.isEnabled()
    _run(widget, qtbot)
    layer = viewer.layers[f"{smear_file.stem} cells"]
    assert "class" not in layer.features.columns
    assert "parasitemia" not in widget.counts.text()
    # cells not named cannot be given a class: said in the section, no traceback
    widget.class_section._set_clicked()
    assert "pick a cell first" in widget.class_section.status.text()
    widget.class_section.pick(layer, 1)
    widget.class_section._set_clicked()
    assert "are not named: Run with classes on" in widget.class_section.status.text()
    widget.model.setCurrentText("default")
    assert widget.classes.isEnabled()


def test_train_on_corrected_images_then_run_the_adapted_model(make_napari_viewer, qtbot,
                                                              smear_file, tmp_path):
    """Correct the cells and their classes, Save, train on the saved image (the
    segmentation and the classes), and Run the adapted model."""
    from pathlib import Path
    from types import SimpleNamespace

    from napari.utils.key_bindings import KeyBinding
    from qtpy.QtCore import Qt

    from bloomseg.cells.types import COLOURS
    from bloomseg.data.dataset import is_flat

    viewer, widget = _widget(make_napari_viewer, smear_file)
    _run(widget, qtbot)
    layer = viewer.layers[f"{smear_file.stem} cells"]
    section = widget.class_section
    for i, cell in enumerate((3, 5)):  # a click on cell 3, then a Shift+click on cell 5
        y, x = np.argwhere(layer.data == cell).mean(axis=0)
        section._clicked(layer, SimpleNamespace(position=(y, x), view_direction=None,
                                                dims_displayed=[0, 1],
                                                modifiers=["Shift"] if i else []))
    assert section.picked == [3, 5]
    called = layer.features.set_index("id")["class"]
    infected = int((called == "infected").sum()) + sum(called[c] != "infected" for c in (3, 5))
    section.stage.setCurrentText("trophozoite")
    layer.keymap[KeyBinding.from_str("I")](layer)  # the key I: infected, at the stage chosen
    chosen = layer.features[layer.features["id"].isin([3, 5])]
    assert (chosen["class"] == "infected").all() and (chosen["stage"] == "trophozoite").all()
    np.testing.assert_allclose(layer.colormap.color_dict[3][:3],
                               np.array(COLOURS["infected"]) / 255, atol=1e-3)
    assert f"{infected} infected" in widget.counts.text()  # the counts follow
    section.pick(layer, 7)
    section.kind.setCurrentIndex(3)  # the list: platelet
    section._set_clicked()
    assert layer.features.loc[layer.features["id"] == 7, "class"].item() == "platelet"
    layer.data = np.where(layer.data == 1, 0, layer.data)  # a correction: a cell erased
    saved = tmp_path / "saved"
    widget.folder.setText(str(saved))
    written = widget.save()
    _, rows = _table(written["cells"])  # cell 1 erased: the others one lower
    assert [(rows[i]["class"], rows[i]["stage"]) for i in (1, 3, 5)] == [
        ("infected", "trophozoite"), ("infected", "trophozoite"), ("platelet", "")]
    assert float(rows[1]["class_probability"]) == 1.0  # the user's word
    # the image is saved beside its cells, so the folder is one training reads
    assert written["image"] == saved / f"{smear_file.stem}.png" and is_flat(saved)
    np.testing.assert_array_equal(read_image(written["image"]), read_image(smear_file))
    training = widget.training
    assert [training.images.item(i).text() for i in range(training.images.count())] == [
        f"{smear_file.stem}.png"]
    training.settings = dict(epochs=1, items_per_epoch=4, batch_size=4)  # the recipe, shorter
    assert training.start() is not None, training.status.text()
    qtbot.waitUntil(lambda: training.worker is None, timeout=WAIT_MS)
    assert training.status.text().startswith("adapted model ready"), training.status.text()
    model = Path(widget.model.currentText())
    assert model.parent.parent == saved and model.name == "model"
    card = (model / "MODEL_CARD.md").read_text()
    assert f"`{smear_file.stem}.png`" in card
    assert "## Cell classes" in card and "-> platelet: 1 cell(s)" in card  # the classes learnt
    np.testing.assert_array_equal(read_labels(model.parent / "images" / written["labels"].name),
                                  read_labels(written["labels"]))  # what it learned from
    _run(widget, qtbot)  # the next Run uses the adapted model
    assert widget.status.text().startswith(f"{smear_file.stem}: done"), widget.status.text()
    assert viewer.layers[f"{smear_file.stem} cells"].data.max() > 0
    # a run folder in use is refused by name; nothing ticked is said
    training.run_folder.setText(str(model.parent))
    assert training.start() is None and "holds a training run already" in training.status.text()
    training.images.item(0).setCheckState(Qt.Unchecked)
    training.run_folder.setText("")
    assert training.start() is None and "no saved image is ticked" in training.status.text()


def test_cancel_stops_training_and_keeps_the_model(make_napari_viewer, qtbot, smear_file,
                                                  tmp_path):
    viewer, widget = _widget(make_napari_viewer, smear_file)
    _run(widget, qtbot)
    widget.folder.setText(str(tmp_path))
    widget.save()
    training = widget.training
    training.settings = dict(epochs=50, items_per_epoch=4, batch_size=1)
    assert training.start() is not None
    qtbot.waitUntil(lambda: training.progress.value() > 0, timeout=WAIT_MS)
    training.cancel()
    qtbot.waitUntil(lambda: training.worker is None, timeout=WAIT_MS)
    assert training.status.text().startswith("cancelled: go on with `bloomseg train --resume")
    assert widget.model.currentText() == "default"
    assert training.train_button.isEnabled() and not training.cancel_button.isEnabled()


def test_the_widget_opens_on_qt6_with_no_deprecation_warning(make_napari_viewer, qtbot):
    import warnings

    import qtpy

    assert qtpy.API_NAME in ("PyQt6", "PySide6")  # napari's PyQt5 support is going away
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        viewer = make_napari_viewer(show=True)
        viewer.window.add_dock_widget(SegmentWidget(viewer))
        qtbot.wait(100)
    said = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught
            if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))
            and any(part in w.filename for part in ("bloomseg", "napari"))]
    assert not said, said
