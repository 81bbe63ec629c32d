"""``bloomseg view``: napari opened on an output folder, with the Segment cells widget."""

from __future__ import annotations

from pathlib import Path

from bloomseg.errors import BloomsegError, ConfigError

EXTRA = "pip install 'bloomseg[napari]'"
"""How to install what the viewer needs."""


def need_napari() -> None:
    """Raise BloomsegError naming the extra where napari (or its Qt) is not installed."""
    try:
        import napari  # noqa: F401
        import qtpy  # noqa: F401
    except Exception as e:  # ImportError, or qtpy's own when no Qt binding is found
        raise BloomsegError(f"the viewer needs napari with a Qt binding ({type(e).__name__}: "
                            f"{e}); install it with: {EXTRA}") from None


def open_outputs(viewer, folder: str | Path, stem: str | None = None):
    """Add an output folder's images and cells to a napari viewer, and the widget, set to
    save into that folder.

    Args:
        viewer: a ``napari.Viewer``.
        folder: a ``bloomseg predict`` output folder (or one ``<stem>_labels.tif``).
        stem: only this image's outputs.

    Returns:
        The :class:`~bloomseg.viewer.widget.SegmentWidget` docked.

    Raises:
        ConfigError: the folder holds no label image (of ``stem``).
    """
    from bloomseg.viewer.reader import LABELS_END, label_files, read_cells
    from bloomseg.viewer.widget import SegmentWidget

    folder = Path(folder)
    files = [f for f in label_files(folder) if stem is None or f.name == f"{stem}{LABELS_END}"]
    if not files:
        what = f"{stem}{LABELS_END}" if stem else f"*{LABELS_END}"
        raise ConfigError(f"{folder}: no {what} there (run bloomseg predict with cells first)")
    for f in files:
        for data, settings, kind in read_cells(f):
            getattr(viewer, f"add_{kind}")(data, **settings)
    widget = SegmentWidget(viewer)
    widget.folder.setText(str(folder if folder.is_dir() else folder.parent))
    viewer.window.add_dock_widget(widget, name="Segment cells", area="right")
    return widget


def view(folder: str | Path, stem: str | None = None) -> None:
    """Open napari on an output folder and wait until it is closed."""
    need_napari()
    if not Path(folder).exists():
        raise ConfigError(f"{folder}: no such output folder")
    import napari

    viewer = napari.Viewer(title=f"bloomseg: {folder}")
    open_outputs(viewer, folder, stem)
    napari.run()
