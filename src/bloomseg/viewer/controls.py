"""Small Qt helpers the widget's sections share."""

from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QWidget


def row(*widgets: QWidget) -> QWidget:
    """The widgets side by side, as one."""
    holder = QWidget()
    layout = QHBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        layout.addWidget(w)
    return holder
