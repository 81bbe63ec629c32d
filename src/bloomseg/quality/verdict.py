"""The verdict: ``ok`` or ``check``, with the reasons an image needs a look.

Each reason is one signal (:func:`bloomseg.quality.signals.signals`) past a limit. The
limits were chosen on the val splits and on failures made from val images on purpose
(``python benchmarks/quality.py --split val``): each one flags few good images and
catches failures the others miss. Nothing was chosen by a test figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bloomseg.quality.signals import signals

if TYPE_CHECKING:
    from bloomseg.inference.segmenter import Prediction

OK = "ok"
CHECK = "check"


@dataclass(frozen=True)
class Reason:
    """A reason to check an image: ``signal`` above ``limit`` (below, with ``below``)."""

    name: str
    signal: str
    limit: float
    text: str
    below: bool = False

    def applies(self, values: dict[str, float]) -> bool:
        v = values.get(self.signal)
        if v is None:  # not measured (a record of an older bloomseg): no reason
            return False
        return v < self.limit if self.below else v > self.limit


REASONS = (
    Reason("empty", "cells", 8, "fewer than 8 cells found", below=True),
    Reason("size_methods", "size_methods", 0.6, "the size methods disagree"),
    Reason("size_found", "size_found", 0.26, "the cells found are not the size they were "
           "segmented at"),
    Reason("fragments", "fragments", 0.2, "many fragments (cells under a third of a red "
           "cell's area)"),
    Reason("crowded", "cells_per_area", 1.6, "more cells than the cell area holds (shredded "
           "cells)"),
    Reason("merged", "cells_per_area", 0.6, "fewer cells than the cell area holds (merged "
           "cells)", below=True),
    Reason("large", "large", 0.01, "cells over twice a red cell's area, neither white nor "
           "platelets (cells taken together)"),
    Reason("unsure", "unsure", 0.15, "the network is unsure of many pixels (blur, an "
           "unfamiliar stain)"),
    Reason("weak_cells", "weak_cells", 0.12, "the network is unsure of many cells as a whole "
           "(faint or blurred cells, background taken for cells)"),
    Reason("white_cells", "white_share", 0.3, "many cells called white"),
    Reason("uncertain_classes", "uncertain_share", 0.2, "many cells of uncertain class"),
    Reason("infected_uncertain", "infected_uncertain", 0.5, "cells called infected whose "
           "class is uncertain: look at them"),
)
"""Every reason an image is judged on alone, in the order they are reported."""
POSSIBLE_POINTS = 4.0
"""On a run with malaria (infected calls not rare) that is not unfamiliar, a field whose
possibly infected cells (:data:`~bloomseg.quality.signals.POSSIBLE`) would add more than
this many points to its parasitemia is flagged (:func:`bloomseg.quality.run.in_run`).
Chosen with ``benchmarks/quality.py`` (val, made failures, labs left out): from 1 point
(a failed count's margin) to 4, as many failed BBBC041 fields are flagged and half as
many good ones."""
RUN_REASONS = {
    "infected_possible": "cells called red that are possibly infected, enough to add over "
                         f"{POSSIBLE_POINTS:g} points to the field's parasitemia: look at them",
    "infected_outlier": "far more cells called infected than in the run's other fields",
    "infected_rare": "cells called infected on a run where they are rare: confirm each",
    "infected_unfamiliar": "cells called infected on a run unlike every lab the classifier "
                           "learnt: look at them",
    "unfamiliar": "the run's red cells are unlike those of every lab the classifier learnt: "
                  "its classes may be wrong",
}
"""The reasons a run gives (:func:`bloomseg.quality.run.judge_run`): a field's, seen
beside the run's other fields, and the run's own (``unfamiliar``)."""


@dataclass
class Verdict:
    """An image's quality verdict.

    Attributes:
        status: ``ok`` or ``check``.
        reasons: the names of the reasons that apply (:data:`REASONS`), in order.
        signals: the signals it was judged on.
    """

    status: str
    reasons: tuple[str, ...] = ()
    signals: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The reasons for a person ('' where there are none)."""
        return reasons_text(self.reasons)


def reasons_text(names: list[str] | tuple[str, ...]) -> str:
    """Reasons' names (:data:`REASONS`) as a person reads them, ``;``-separated."""
    texts = {r.name: r.text for r in REASONS} | RUN_REASONS
    return "; ".join(texts.get(n, n) for n in names)


def verdict_of(values: dict[str, float], reasons: tuple[Reason, ...] = REASONS) -> Verdict:
    """The verdict of an image's signals (:func:`~bloomseg.quality.signals.signals`)."""
    found = tuple(r.name for r in reasons if r.applies(values))
    if "empty" in found:  # an empty field gives no other reason a meaning
        found = ("empty",)
    return Verdict(CHECK if found else OK, found, values)


def judge(prediction: Prediction, reasons: tuple[Reason, ...] = REASONS) -> Verdict:
    """Judge a segmented image, and keep the verdict on the prediction (``qc``).

    Args:
        prediction: a :class:`~bloomseg.inference.segmenter.Prediction` with cells.
        reasons: the reasons to look for (default: all).

    Returns:
        The verdict, also set as ``prediction.qc``.
    """
    verdict = verdict_of(signals(prediction), reasons)
    prediction.qc = verdict
    return verdict
