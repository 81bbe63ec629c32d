"""The run's verdict: whether a run's fields, taken together, look like the labs the
classifier learnt, and each field's verdict seen beside the run's other fields.

A lab meets bloomseg on its first run: either its smears are like those the classifier
learnt, or the whole microscope is not, and then every field's classes are in doubt. That
is said once, for the run. Each field's red cells are summed up by their
:func:`~bloomseg.model.classifier.red_profile` (the classifier's features of the cells it
calls red); the run's profile is the mean of its fields'. Its distance from the nearest
training lab's profile, in units of how far one field of that lab lies from the lab's own
mean (:meth:`~bloomseg.model.classifier.CellClassifier.set_labs`), is compared with a limit
that allows for the noise of a short run: :data:`LIMIT_BASE` + :data:`LIMIT_NOISE` /
sqrt(fields). Both were chosen by leaving a lab out (``benchmarks/quality.py --unseen``):
every lab left out whose classes failed is ``unfamiliar``, the val fields of the labs
trained on are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from bloomseg.quality.verdict import (
    CHECK,
    OK,
    POSSIBLE_POINTS,
    REASONS,
    RUN_REASONS,
    Verdict,
    judge,
    reasons_text,
    verdict_of,
)

MIN_FIELDS = 3
"""A run is judged where this many of its fields have a red-cell profile."""
LIMIT_BASE = 0.6
"""The run's distance from the nearest training lab above which it is unfamiliar, for a
long run..."""
LIMIT_NOISE = 1.0
"""...plus this over the square root of its fields (one field's profile lies about 1 from
its lab's mean: a short run's mean is noisier)."""
USUAL_SHARE = 0.25
"""A reason given to at least this share of a run's fields is usual on this lab: said
once in the run's verdict, not field by field (:data:`RESTATING`)."""
RESTATING = ("uncertain_classes", "size_methods")
"""The reasons a lab may make usual: its cells' classes are uncertain (only where the run
is unfamiliar, which says it already; then always), and its size methods disagree (a
classical estimate thrown by a stain or a magnification, where the cells are found
well: BCCD's half of fields)."""
RARE_SHARE = 0.005
"""Where fewer than this share of a run's red cells are called infected, each infected
call is a claim that changes the diagnosis of a near-negative slide: the fields that
hold one are flagged to be confirmed (a design choice: a lab that sees one false
malaria call stops trusting every number)."""
OUTLIER_P = 1e-3
"""A field is an outlier where so many infected calls among its cells would be this
unlikely at the infected share of the run's other fields (binomial)..."""
OUTLIER_MIN = 2
"""...and it has at least this many."""


@dataclass(frozen=True)
class RunVerdict:
    """A run's verdict.

    Attributes:
        status: ``ok``, ``check``, or '' where the run could not be judged (``note`` says
            why).
        reasons: ``("unfamiliar",)`` or ().
        distance: the run's distance from the nearest training lab (None: not judged).
        limit: the limit for a run of its length.
        fields: the fields with a red-cell profile.
        note: why the run was not judged ('' where it was).
        summarised: reason -> the fields that gave it, where on this run it is usual
            and said here instead of on each field (:func:`in_run`).
    """

    status: str
    reasons: tuple[str, ...] = ()
    distance: float | None = None
    limit: float | None = None
    fields: int = 0
    note: str = ""
    summarised: tuple[tuple[str, int], ...] = ()

    @property
    def unfamiliar(self) -> bool:
        return "unfamiliar" in self.reasons

    @property
    def text(self) -> str:
        """What the verdict means and what to do, for a person."""
        if not self.status:
            return f"not judged: {self.note}"
        measured = (f"distance {self.distance:.2f} from the nearest lab learnt, limit "
                    f"{self.limit:.2f} for {self.fields} fields")
        usual = "; ".join(f"{reasons_text([name])}: {n} fields" for name, n in self.summarised)
        usual = f". Usual on this run, so not flagged field by field: {usual}" if usual else ""
        if self.unfamiliar:
            return (f"check: {RUN_REASONS['unfamiliar']} ({measured}). Check the classes on a "
                    "few fields (the infected calls first), correct them, and adapt the "
                    "classifier to this microscope: bloomseg train --adapt" + usual)
        return ("ok: the run's red cells are like those of a lab the classifier learnt "
                f"({measured})" + usual)


def run_limit(fields: int) -> float:
    """The distance above which a run of ``fields`` fields is unfamiliar."""
    return float(LIMIT_BASE + LIMIT_NOISE / np.sqrt(max(1, fields)))


def lab_distance(profiles: np.ndarray, centres: np.ndarray, scatter: np.ndarray) -> float:
    """The run's distance from the nearest training lab.

    Args:
        profiles: (K, F) the run's fields' red-cell profiles.
        centres: (L, F) the training labs' profiles; scatter: (L,) a field's distance
            from its lab's (:meth:`~bloomseg.model.classifier.CellClassifier.set_labs`).

    Returns:
        min over labs of the root-mean-square difference of the run's mean profile and
        the lab's, over the lab's scatter.
    """
    run = profiles.mean(axis=0)
    return float(np.min(np.sqrt(np.mean((centres - run) ** 2, axis=1)) / scatter))


def run_status(profiles: Sequence[np.ndarray | None], centres: np.ndarray,
               scatter: np.ndarray) -> RunVerdict:
    """The run's verdict from its fields' red-cell profiles (None: a field without one)
    and the classifier's lab profiles."""
    kept = [p for p in profiles if p is not None]
    if not len(centres):
        return RunVerdict("", note="the classifier keeps no profile of the labs it learnt "
                          "(trained before bloomseg 0.4: retrain or adapt it)")
    if len(kept) < MIN_FIELDS:
        return RunVerdict("", fields=len(kept), note=f"{len(kept)} field(s) with red cells "
                          f"named; a run needs {MIN_FIELDS}")
    distance, limit = lab_distance(np.array(kept), centres, scatter), run_limit(len(kept))
    far = distance > limit
    return RunVerdict(CHECK if far else OK, ("unfamiliar",) if far else (), distance, limit,
                      len(kept))


def outliers(signals: Sequence[dict]) -> np.ndarray:
    """(K,) bool: the fields whose infected calls are far above the run's other fields'
    share (:data:`OUTLIER_P`, :data:`OUTLIER_MIN`)."""
    # the binomial tail from scipy.special, not scipy.stats: importing scipy.stats
    # costs a run's start 0.6-0.9 s
    from scipy.special import bdtrc

    infected = np.array([s.get("infected", 0.0) for s in signals])
    named = infected + np.array([s.get("red", 0.0) for s in signals])
    others = (infected.sum() - infected) / np.maximum(1, named.sum() - named)
    # P(at least `infected` of `named` at the others' share)
    tail = np.where(infected > 0, bdtrc(infected - 1, named.astype(int), np.clip(others, 0, 1)),
                    1.0)
    return (infected >= OUTLIER_MIN) & (tail < OUTLIER_P)


def possible_points(signals: dict[str, float]) -> float:
    """How many points of parasitemia a field's possibly infected cells would add."""
    named = signals.get("red", 0.0) + signals.get("infected", 0.0)
    return 100 * signals.get("infected_possible", 0.0) / named if named else 0.0


def in_run(verdicts: Sequence[Verdict], run: RunVerdict) -> tuple[list[Verdict], RunVerdict]:
    """Each field's verdict seen beside the run's other fields.

    A field whose infected share is far above the others' is flagged
    (``infected_outlier``), and so is one with infected calls where they are rare in the
    run (``infected_rare``, :data:`RARE_SHARE`); where they are not, one whose cells called
    red but possibly infected would move its parasitemia by over :data:`POSSIBLE_POINTS`
    (``infected_possible``). Where the run is unfamiliar, a field with
    infected calls is flagged (``infected_unfamiliar``: on such a run those are what to
    look at; it stands for ``infected_rare`` too). The reasons that only say again what
    the lab is like (:data:`RESTATING`) give way to the run's verdict where they are
    usual (:data:`USUAL_SHARE` of the fields; many uncertain classes always are on an
    unfamiliar run).

    Args:
        verdicts: each field's own verdict (:func:`bloomseg.quality.judge`).
        run: the run's verdict (:func:`run_status`).

    Returns:
        (the fields' verdicts in order, the run's verdict with what it summarised).
    """
    if not verdicts:
        return [], run
    signals = [v.signals for v in verdicts]
    odd = outliers(signals) if len(verdicts) >= MIN_FIELDS else np.zeros(len(verdicts), bool)
    infected = sum(s.get("infected", 0.0) for s in signals)
    rare = infected < RARE_SHARE * (infected + sum(s.get("red", 0.0) for s in signals))
    doubt = ("infected_unfamiliar",) if run.unfamiliar else ("infected_rare",) if rare else ()
    # where the run is unfamiliar its classes are all in doubt (said once); where infections
    # are rare, the slide's question is the calls, not the count
    count = not run.unfamiliar and not rare
    given = {name: sum(name in v.reasons for v in verdicts) for name in RESTATING}
    usual = {name: n for name, n in given.items() if n and (
        (name == "uncertain_classes" and run.unfamiliar) or (
            name != "uncertain_classes" and n >= USUAL_SHARE * len(verdicts)
            and len(verdicts) >= MIN_FIELDS))}
    reasons = tuple(r for r in REASONS if r.name not in usual)
    out = []
    for v, outlier in zip(verdicts, odd):
        found = verdict_of(v.signals, reasons).reasons + (
            ("infected_outlier",) if outlier else ()) + (
            doubt if v.signals.get("infected", 0) > 0 else ()) + (
            ("infected_possible",) if count and possible_points(v.signals) > POSSIBLE_POINTS
            else ())
        if "empty" in found:
            found = ("empty",)
        out.append(Verdict(CHECK if found else OK, found, v.signals))
    return out, replace(run, summarised=tuple(usual.items()))


def judge_run(predictions: Sequence, segmenter) -> RunVerdict:
    """Judge a run: its verdict, and each prediction's ``qc`` seen beside the others.

    Args:
        predictions: the run's :class:`~bloomseg.inference.segmenter.Prediction` s with
            cells (``instances=True``) and classes.
        segmenter: the :class:`~bloomseg.inference.segmenter.Segmenter` that made them
            (or its ``classifier``).

    Returns:
        The run's verdict; each prediction's ``qc`` is set to its verdict in the run
        (:func:`in_run`).

    Raises:
        ConfigError: the segmenter names no classes.
    """
    from bloomseg.errors import ConfigError

    classifier = getattr(segmenter, "classifier", segmenter)
    if classifier is None:
        raise ConfigError("judge_run: the segmenter has no cell classifier: a run's verdict "
                          "is on its classes")
    own = [judge(p) for p in predictions]  # on its own first: a verdict is never judged twice
    run = run_status([p.red_profile for p in predictions], classifier.lab_centres.numpy(),
                     classifier.lab_scatter.numpy())
    fields, run = in_run(own, run)
    for p, v in zip(predictions, fields):
        p.qc = v
    return run
