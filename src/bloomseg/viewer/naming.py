"""The **Cell classes** section of the Segment cells widget: pick cells on a cells layer
(click one; Shift+click adds or removes one) and set what they are, from the list or by
a key (R red cell, I infected at the chosen stage, W white cell, T platelet); the colours
and counts follow, and Save writes the classes set (:func:`apply_classes`)."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QComboBox, QGroupBox, QLabel, QPushButton, QVBoxLayout

from bloomseg.data.vocabulary import KINDS, STAGES
from bloomseg.errors import ConfigError
from bloomseg.viewer.controls import row
from bloomseg.viewer.layers import META, SET, class_colormap, counts_text

KEYS = {"r": "red_blood_cell", "i": "infected", "w": "white_blood_cell", "t": "platelet"}
"""The key that sets each common class on the picked cells (free in napari's Labels
layer: its own keys are digits and E, P, F, L, Z, M, X, B)."""


def set_classes(layer, cells: list[int], kind: str, stage: str = "") -> None:
    """Set the class of some cells of a cells layer: its table, colours and the record
    Save reads.

    Args:
        layer: a cells Labels layer (its ``features`` the cell table).
        cells: the labels to set.
        kind: one of :data:`~bloomseg.data.vocabulary.KINDS`; stage: for ``infected``,
            one of :data:`~bloomseg.data.vocabulary.STAGES`.

    Raises:
        ConfigError: no cell, an unknown class or stage, a cell not in the layer, or a
            layer whose cells are not named.
    """
    if kind not in KINDS:
        raise ConfigError(f"class {kind!r} is not one of {', '.join(KINDS)}")
    stage = stage if kind == "infected" else ""
    if kind == "infected" and stage not in STAGES:
        raise ConfigError(f"an infected cell needs its stage ({', '.join(STAGES)})")
    cells = [int(c) for c in cells if int(c) > 0]
    if not cells:
        raise ConfigError("pick a cell first: click it (Shift+click adds more)")
    features = layer.features.copy()
    if not {"id", "class", "stage"} <= set(features.columns):
        raise ConfigError(f"the cells of {layer.name!r} are not named: Run with classes on (a "
                          "model with a cell classifier), then set their classes")
    missing = [c for c in cells if c not in set(features["id"].astype(int))]
    if missing:
        raise ConfigError(f"cell {missing[0]} is not in the layer's table: Save, or Run again, "
                          "after painting new cells, then set their class")
    rows = features["id"].astype(int).isin(cells)
    features.loc[rows, "class"] = kind
    features.loc[rows, "stage"] = stage
    layer.features = features
    layer.colormap = class_colormap(features["id"], features["class"])
    layer.metadata.setdefault(META, {}).setdefault(SET, {}).update(
        {c: (kind, stage) for c in cells})
    layer.refresh()


def apply_classes(types: list[dict], set_by_hand: dict, forward) -> list[dict]:
    """The class rows Save writes: the classifier's, with the classes set by hand in
    their place where they differ (the user's word: probability 1, not uncertain).

    Args:
        types: one class row per saved cell (label order, 1..N).
        set_by_hand: {layer label: (class, stage)} (:data:`SET`).
        forward: the layer's labels -> the saved labels (erased cells leave no gaps),
            indexable by label.
    """
    rows = [dict(t) for t in types]
    for cell, (kind, stage) in set_by_hand.items():
        saved = int(forward[np.array([int(cell)])][0]) if int(cell) < len(forward) else 0
        if 0 < saved <= len(rows) and (rows[saved - 1]["class"], rows[saved - 1]["stage"]) \
                != (kind, stage):
            rows[saved - 1] |= {"class": kind, "stage": stage, "class_probability": 1.0,
                                "uncertain": False}
    return rows


class ClassSection(QGroupBox):
    """Pick cells and set their class.

    Args:
        owner: the Segment cells widget (its cells layer and counts).
    """

    def __init__(self, owner) -> None:
        super().__init__("Cell classes")
        self.owner = owner
        self.picked: list[int] = []
        self._layer = None  # the layer the picked cells are of
        self.kind = QComboBox()
        self.kind.addItems([k.replace("_", " ") for k in KINDS])
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.stage = QComboBox()
        self.stage.addItems(list(STAGES))
        self.stage.setEnabled(False)
        self.set_button = QPushButton("Set")
        self.set_button.setToolTip("give the picked cells this class (keys on the cells layer: "
                                   + ", ".join(f"{k.upper()} {v.replace('_', ' ')}"
                                               for k, v in KEYS.items()) + ")")
        self.set_button.clicked.connect(self._set_clicked)
        self.status = QLabel("click a cell of a cells layer (Shift+click: more), then Set or "
                             "a key: " + ", ".join(f"{k.upper()} {v.split('_')[0]}"
                                                   for k, v in KEYS.items()))
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(row(self.kind, self.stage, self.set_button))
        layout.addWidget(self.status)

    def attach(self, layer) -> None:
        """Let a cells layer be picked from and its cells be set by key."""
        if getattr(layer, "_bloomseg_classes", False):
            return
        layer._bloomseg_classes = True
        layer.mouse_drag_callbacks.append(self._clicked)
        for key, kind in KEYS.items():
            layer.bind_key(key, lambda lay, kind=kind: self._keyed(lay, kind), overwrite=True)

    def pick(self, layer, cell: int, add: bool = False) -> None:
        """Pick a cell (``add``: add it to, or take it from, those picked)."""
        if cell <= 0:
            return
        if not add:
            self.picked = [cell]
        elif cell in self.picked:
            self.picked.remove(cell)
        else:
            self.picked.append(cell)
        self._layer = layer
        self.status.setText(f"picked: cell{'s' * (len(self.picked) != 1)} "
                            f"{', '.join(map(str, self.picked))} of {layer.name}")

    def set(self, kind: str, stage: str | None = None, layer=None) -> None:
        """Set the picked cells' class (:func:`set_classes`); the counts follow.

        Raises:
            ConfigError: nothing picked, or a bad class.
        """
        layer = layer or self._layer
        if layer is None:
            raise ConfigError("pick a cell first: click it (Shift+click adds more)")
        stage = self.stage.currentText() if stage is None else stage
        set_classes(layer, self.picked, kind, stage)
        self.status.setText(f"{len(self.picked)} cell(s) set to {kind.replace('_', ' ')}"
                            f"{f' ({stage})' if kind == 'infected' else ''}: Save to keep it")
        self.owner.counts.setText(counts_text(layer.features))

    def _clicked(self, layer, event) -> None:
        if layer.mode not in ("pan_zoom", "pick"):
            return  # painting, filling or erasing: napari's
        value = layer.get_value(event.position, view_direction=event.view_direction,
                                dims_displayed=event.dims_displayed, world=True)
        if value:
            self.pick(layer, int(value), add="Shift" in event.modifiers)

    def _keyed(self, layer, kind: str) -> None:
        self._guarded(lambda: self.set(kind, layer=layer))

    def _set_clicked(self) -> None:
        self._guarded(lambda: self.set(KINDS[self.kind.currentIndex()]))

    def _guarded(self, action) -> None:
        try:
            action()
        except ConfigError as e:
            self.status.setText(f"error: {e}")

    def _kind_changed(self, index: int) -> None:
        self.stage.setEnabled(KINDS[index] == "infected")
