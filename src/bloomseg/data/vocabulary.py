"""Cell classes: the one vocabulary every dataset's box classes are mapped to.

A dataset names its box classes in ``ROOT/classes.txt`` (``<id> <name>`` per line);
each name is mapped here to one of :data:`CLASSES`: red cells, the four stages of a
*Plasmodium* infection (an infected red cell's box carries its stage), white cells and
platelets. A dataset also says, by the classes it names, what its boxes can hide: where
infections are not labelled (txlpbc), a red cell's box may be an infected cell's, so it
teaches "red or infected" (:func:`allowed_classes`). A class a dataset does not box at
all (BBBC041's platelets) teaches nothing there: its cells match no box.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bloomseg.errors import DataError

CLASSES = ("red_blood_cell", "ring", "trophozoite", "schizont", "gametocyte",
           "white_blood_cell", "platelet")
"""What a cell classifier tells apart, in the order of its outputs."""
STAGES = ("ring", "trophozoite", "schizont", "gametocyte")
"""The classes that are an infected red cell, by the parasite's stage."""
KINDS = ("red_blood_cell", "infected", "white_blood_cell", "platelet")
"""What a cell is called in the outputs: an infected red cell is ``infected`` with a stage."""
ALIASES = {
    "red_blood_cell": "red_blood_cell", "red blood cell": "red_blood_cell", "rbc": "red_blood_cell",
    "erythrocyte": "red_blood_cell",
    "ring": "ring", "trophozoite": "trophozoite", "schizont": "schizont",
    "gametocyte": "gametocyte",
    "white_blood_cell": "white_blood_cell", "white blood cell": "white_blood_cell",
    "wbc": "white_blood_cell", "leukocyte": "white_blood_cell",
    "platelet": "platelet", "platelets": "platelet", "thrombocyte": "platelet",
}
"""Dataset class names (lower case) -> :data:`CLASSES`."""
CLASSES_FILE = "classes.txt"


@dataclass(frozen=True)
class DatasetClasses:
    """A dataset's box classes in the vocabulary.

    Attributes:
        index: box class id -> index into :data:`CLASSES`.
        known: (len(CLASSES),) bool: the classes the dataset's annotators labelled
            (see :func:`allowed_classes`).
    """

    index: dict[int, int]
    known: np.ndarray

    def targets(self, box_classes: np.ndarray) -> np.ndarray:
        """(N,) box class ids -> (N,) int64 indices into :data:`CLASSES`.

        Raises:
            DataError: an id that ``classes.txt`` does not name.
        """
        ids = np.asarray(box_classes).astype(np.int64)
        unknown = sorted(set(ids.tolist()) - set(self.index))
        if unknown:
            raise DataError(f"box class ids {unknown} are not named in the dataset's "
                            f"{CLASSES_FILE} (it names {sorted(self.index)})")
        return np.array([self.index[i] for i in ids.tolist()], np.int64)


def parse_classes(text: str, source: str = CLASSES_FILE) -> DatasetClasses:
    """A ``classes.txt`` text (``<id> <name>`` per line) in the vocabulary.

    Raises:
        DataError: naming ``source`` and the line of a malformed entry or a name the
            vocabulary does not know.
    """
    index: dict[int, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        head, _, name = line.strip().partition(" ")
        if not head.isdigit() or not name.strip():
            raise DataError(f"{source} line {number}: expected '<id> <name>', got {line.strip()!r}")
        key = name.strip().lower()
        if key not in ALIASES:
            raise DataError(f"{source} line {number}: class {name.strip()!r} is not one bloomseg "
                            f"knows (known: {', '.join(sorted(ALIASES))})")
        if int(head) in index:
            raise DataError(f"{source} line {number}: class id {head} named twice")
        index[int(head)] = CLASSES.index(ALIASES[key])
    if not index:
        raise DataError(f"{source}: names no classes")
    known = np.zeros(len(CLASSES), bool)
    known[list(index.values())] = True
    return DatasetClasses(index, known)


def read_classes(root: str | Path) -> DatasetClasses:
    """A dataset root's ``classes.txt`` in the vocabulary.

    Raises:
        DataError: the file is missing, unreadable or names an unknown class.
    """
    path = Path(root) / CLASSES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the dataset's class names ({e}); cell classes "
                        f"need one '<id> <name>' line per box class") from None
    return parse_classes(text, str(path))


HIDDEN_IN = {"red_blood_cell": STAGES}
"""Classes a box may hide where its dataset does not name them: an infected red cell is
boxed as a red cell by annotators who do not label infections. A box of any other class
is what it says (a white cell is no stage, whatever the dataset names)."""


def allowed_classes(targets: np.ndarray, known: np.ndarray) -> np.ndarray:
    """What each box may truly be.

    Args:
        targets: (N,) class indices of the boxes.
        known: (N, len(CLASSES)) bool, the classes each box's dataset names.

    Returns:
        (N, len(CLASSES)) bool: the box's class, and the classes it may hide
        (:data:`HIDDEN_IN`) that its dataset does not name.
    """
    targets = np.asarray(targets, np.int64)
    allowed = np.zeros((len(targets), len(CLASSES)), bool)
    allowed[np.arange(len(targets)), targets] = True
    for name, hidden in HIDDEN_IN.items():
        rows = targets == CLASSES.index(name)
        for h in hidden:
            allowed[rows, CLASSES.index(h)] = ~known[rows, CLASSES.index(h)]
    return allowed


def kind_of(index: int) -> str:
    """The output kind (:data:`KINDS`) of a class index."""
    name = CLASSES[index]
    return "infected" if name in STAGES else name
