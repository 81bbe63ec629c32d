"""Shared pieces of the napari plugin's tests: a sample smear and the command line's
outputs for it. Each module calls ``conftest.need_viewer`` first: it skips, saying why,
where napari is not installed or there is no display (``make test`` runs the tests under
``xvfb-run``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smear_file(tmp_path_factory) -> Path:
    """The plugin's sample smear as a PNG, in a folder of its own."""
    from bloomseg.files import save_png
    from bloomseg.viewer.sample import synthetic_smear

    path = tmp_path_factory.mktemp("images") / "smear.png"
    save_png(path, synthetic_smear()[0][0])
    return path


@pytest.fixture(scope="session")
def cli_outputs(smear_file, tmp_path_factory) -> Path:
    """``bloomseg predict`` of the sample smear with the default model: its output folder."""
    from bloomseg.cli import main

    out = tmp_path_factory.mktemp("predicted")
    assert main(["predict", "default", str(smear_file), "-o", str(out), "-q", "--overwrite", "--cells"]) == 0
    return out
