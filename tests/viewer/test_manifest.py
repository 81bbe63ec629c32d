"""The plugin's npe2 manifest, its sample data, and a screenshot of the viewer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import need_viewer

need_viewer()


def test_the_manifest_validates_and_is_found_by_its_entry_point():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("bloomseg")
    assert manifest.name == "bloomseg"
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    assert commands["bloomseg.segment_widget"] == "bloomseg.viewer.widget:SegmentWidget"
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent)) or "npe2"
    done = subprocess.run([npe2, "validate", "bloomseg"], capture_output=True, text=True)
    assert done.returncode == 0 and "valid" in done.stdout + done.stderr


def test_the_sample_is_one_rgb_smear():
    from bloomseg.data.synthetic import REAL_SCALE
    from bloomseg.viewer.sample import synthetic_smear

    (image, settings, kind), = synthetic_smear()
    assert kind == "image" and settings["rgb"] and image.dtype == np.uint8
    assert image.shape == (*REAL_SCALE["size"], 3)


def test_a_screenshot_of_the_viewer_is_not_blank(make_napari_viewer, qtbot, tmp_path):
    """Also writes the README's picture where BLOOMSEG_SCREENSHOT names a file (classes
    off: bloomseg's drawn disks are no stain the classifier has seen), of the smear
    BLOOMSEG_SCREENSHOT_IMAGE names where it does (classes on: a real smear)."""
    from bloomseg.data.images import read_image
    from bloomseg.files import save_png
    from bloomseg.viewer.sample import synthetic_smear
    from bloomseg.viewer.widget import SegmentWidget

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 1000)
    real = os.environ.get("BLOOMSEG_SCREENSHOT_IMAGE")
    images = [(read_image(real), {"name": Path(real).stem, "rgb": True}, "image")] if real \
        else synthetic_smear()
    for data, settings, _ in images:
        viewer.add_image(data, **settings)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment cells", area="right")
    widget.classes.setChecked(bool(real))
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot.shape[0] > 300 and shot.shape[1] > 500
    rgb = shot[..., :3].reshape(-1, 3)
    assert rgb.std() > 20 and len(np.unique(rgb, axis=0)) > 500
    target = os.environ.get("BLOOMSEG_SCREENSHOT")
    save_png(Path(target) if target else tmp_path / "viewer.png", np.ascontiguousarray(shot[..., :3]))


def test_napari_offers_the_reader_for_outputs_only(tmp_path):
    """Folders and label images go to bloomseg's reader; a plain image is not claimed, so
    napari never asks which plugin should open it."""
    import npe2

    manager = npe2.PluginManager.instance()
    manager.discover()

    def ours(path) -> bool:
        return any(r.command == "bloomseg.get_reader" for r in manager.iter_compatible_readers([path]))

    (tmp_path / "a_labels.tif").write_bytes(b"")
    assert ours(str(tmp_path)) and ours(str(tmp_path / "a_labels.tif"))
    assert not ours(str(tmp_path / "smear.png")) and not ours(str(tmp_path / "smear.tif"))
