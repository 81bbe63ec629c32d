"""examples/walkthrough.ipynb runs from top to bottom (tiny settings), so it never goes stale."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "walkthrough.ipynb"


def test_walkthrough_notebook_runs(tmp_path, monkeypatch, bloomseg_home):
    monkeypatch.setenv("BLOOMSEG_NOTEBOOK_TINY", "1")  # the kernel inherits it
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "using SYNTHETIC smears" in text
    assert "cells, " in text and "not cut by the border" in text
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 4  # sample grid, curves, metrics, cells
    out = tmp_path / "walkthrough-out"
    for name in ("explore/sample_grid.png", "run/best.pt", "eval/report.html", "predict/report.html"):
        assert (out / name).is_file(), name
