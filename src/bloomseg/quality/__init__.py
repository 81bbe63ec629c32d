"""The quality verdict: whether a segmented image can be trusted or needs a look.

It reads a :class:`~bloomseg.inference.segmenter.Prediction` (and the size step's record)
and returns a :class:`Verdict`, ``ok`` or ``check`` with named reasons, computed here once
for the summary table, the report, the command line, napari and ``evaluate``; and the
run's verdict (:func:`judge_run`): whether a run's red cells are like those of a lab the
classifier learnt, said once for the run."""

from __future__ import annotations

from bloomseg.quality.run import RunVerdict, judge_run
from bloomseg.quality.verdict import CHECK, OK, REASONS, Verdict, judge, reasons_text, verdict_of

__all__ = ["CHECK", "OK", "REASONS", "RunVerdict", "Verdict", "judge", "judge_run",
           "reasons_text", "verdict_of"]
