"""The reader and ``bloomseg view``'s opening of an output folder."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

from conftest import need_viewer

need_viewer()

from bloomseg.data.images import read_image, read_labels  # noqa: E402
from bloomseg.errors import BloomsegError, ConfigError  # noqa: E402
from bloomseg.viewer.launch import need_napari, open_outputs  # noqa: E402
from bloomseg.viewer.reader import get_reader, read_outputs  # noqa: E402


def test_the_reader_opens_an_output_folder_with_its_image_and_table(cli_outputs, smear_file):
    reader = get_reader(str(cli_outputs))
    assert reader is read_outputs
    (image, image_settings, kind), (labels, settings, labels_kind) = reader(str(cli_outputs))
    # the image lives elsewhere: found through the run's record
    assert kind == "image" and image_settings["name"] == smear_file.stem
    np.testing.assert_array_equal(image, read_image(smear_file))
    assert labels_kind == "labels" and settings["name"] == f"{smear_file.stem} cells"
    np.testing.assert_array_equal(labels, read_labels(cli_outputs / f"{smear_file.stem}_labels.tif"))
    with open(cli_outputs / f"{smear_file.stem}_cells.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(settings["features"]["id"]) == [int(r["id"]) for r in rows]
    assert set(settings["colormap"]) >= {int(r["id"]) for r in rows}
    assert settings["metadata"]["bloomseg"]["diameter"]["diameter"] == rows[0]["image_diameter"]
    # the saved classes are what the user said: Save keeps them
    assert settings["metadata"]["bloomseg"]["set_classes"] == {
        int(r["id"]): (r["class"], r["stage"]) for r in rows}
    # one label file on its own reads the same
    single = get_reader(str(cli_outputs / f"{smear_file.stem}_labels.tif"))
    assert len(single(str(cli_outputs / f"{smear_file.stem}_labels.tif"))) == 2


def test_the_reader_leaves_other_paths_to_other_readers(tmp_path, smear_file):
    assert get_reader(str(tmp_path)) is None
    assert get_reader(str(smear_file)) is None


def test_view_opens_the_outputs_with_the_widget_set_to_save_there(make_napari_viewer, cli_outputs,
                                                                  smear_file):
    viewer = make_napari_viewer()
    widget = open_outputs(viewer, cli_outputs)
    assert [layer.name for layer in viewer.layers] == [smear_file.stem, f"{smear_file.stem} cells"]
    assert widget.folder.text() == str(cli_outputs)
    with pytest.raises(ConfigError, match="no other_labels.tif"):
        open_outputs(viewer, cli_outputs, "other")


def test_without_napari_the_viewer_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "napari", None)  # import napari now fails
    with pytest.raises(BloomsegError, match=r"pip install 'bloomseg\[napari\]'"):
        need_napari()


def test_view_refuses_a_folder_that_is_not_there(tmp_path, capsys):
    from bloomseg.cli import main

    assert main(["view", str(tmp_path / "nothing")]) == 2
    assert "nothing: no such output folder" in capsys.readouterr().err


def test_bloomseg_view_opens_napari_on_an_output_folder(make_napari_viewer, monkeypatch, cli_outputs,
                                                        smear_file):
    import napari

    from bloomseg.cli import main

    opened = []
    monkeypatch.setattr(napari, "Viewer", lambda **kw: opened.append(make_napari_viewer()) or opened[-1])
    monkeypatch.setattr(napari, "run", lambda: None)  # the event loop would wait for a person
    assert main(["view", str(cli_outputs), smear_file.stem]) == 0
    (viewer,) = opened
    assert [layer.name for layer in viewer.layers] == [smear_file.stem, f"{smear_file.stem} cells"]
    assert "Segment cells" in viewer.window.dock_widgets
