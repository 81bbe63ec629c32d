"""Small Qt helpers the widget's sections share."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QHBoxLayout, QWidget

from bloomseg.errors import BloomsegError


def row(*widgets: QWidget) -> QWidget:
    """The widgets side by side, as one."""
    holder = QWidget()
    layout = QHBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        layout.addWidget(w)
    return holder


def start_worker(function: Callable, *args, returned: Callable, errored: Callable,
                 finished: Callable):
    """Run ``function(*args)`` in a napari worker thread; its result, error and end are
    delivered to the callbacks in the viewer's thread (an error is the callback's to
    say, not re-raised there). Returns the started worker."""
    from napari.qt.threading import create_worker

    worker = create_worker(function, *args, _start_thread=False, _ignore_errors=True)
    worker.returned.connect(returned)
    worker.errored.connect(errored)
    worker.finished.connect(finished)
    worker.start()
    return worker


def error_text(error: Exception) -> str:
    """A worker's error for the status line: bloomseg's own message, else the type too
    (napari's console keeps the traceback)."""
    if isinstance(error, BloomsegError):
        return f"error: {error}"
    return f"error: {type(error).__name__}: {error}"
