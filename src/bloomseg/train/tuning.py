"""Choosing a trained model's cell-separation settings on its validation images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from bloomseg.cells.instances import (
    DEFAULT_CENTRES,
    DEFAULT_DISTANCE,
    InstanceParams,
    edge_grid_for,
    tune,
    tune_edges,
)
from bloomseg.files import save_csv

Case = tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]
"""A validation image as the model saw it: (predicted foreground (H, W) bool, centre map
or None, true mask (H, W) bool or None, true boxes (N, 4) x0, y0, x1, y1 or None)."""


def choose_separation(cases: list[Case], centres: bool, inherited: InstanceParams | None,
                      run_dir: str | Path, log: Callable[[str], None],
                      source: str = "the start model", groups: list[str] | None = None,
                      cell_diameter: float | None = None, margin: float = 0.0) -> InstanceParams:
    """The seed settings by instance F1 against the boxes (``instance_tuning.csv``), then
    the edge sliver size by each dataset's own score (``edge_tuning.csv``, see
    :func:`bloomseg.cells.instances.tune_edges`).

    Args:
        cases: the validation images (none in a final fit on every image).
        centres: the model has a centre map (else cells part at distance peaks).
        inherited: the settings to keep where there is nothing to tune on (and, with a
            ``margin``, where what is tuned is not better by more than it).
        run_dir: where the tuning tables go.
        log: where each choice is reported.
        source: what ``inherited`` came from, for the log.
        groups: per case, its dataset: each dataset's images weigh the same in all
            (see :func:`bloomseg.cells.instances.tune`).
        cell_diameter: px, the model's cell diameter: the settings tried are scaled to it.
        margin: how much better (instance F1; then the edge score) a tuned setting must
            score than ``inherited``'s to replace it: a few images' best is partly chance,
            one cell of fifty is 0.02 of F1.

    Returns:
        The chosen settings.
    """
    run_dir = Path(run_dir)
    method = "centres" if centres else "distance"
    boxed = [(fg, c, boxes) for fg, c, _, boxes in cases if boxes is not None]
    if boxed:
        named = None if groups is None else [g for g, (*_, b) in zip(groups, cases)
                                             if b is not None]
        params, rows = tune(boxed, method, groups=named, cell_diameter=cell_diameter)
        save_csv(run_dir / "instance_tuning.csv", rows, list(rows[0]))
        best = next(r for r in rows if all(r[k] == v for k, v in params.as_dict().items()
                                           if k != "edge_min_area"))
        log(f"cell separation ({method}): min_distance {params.min_distance} px, "
            f"min_height {params.min_height}, min_area {params.min_area} px: "
            f"val instance F1 {best['f1']:.4f}, "
            f"count error {best['count_error']:.2%} ({len(boxed)} images"
            f"{', each dataset weighing the same' if groups and len(set(groups)) > 1 else ''})")
        if margin and inherited is not None and inherited.method == method:
            own = {k: [v] for k, v in inherited.as_dict().items()
                   if k in ("min_distance", "min_height", "min_area")}
            theirs = tune(boxed, method, own, groups=named)[1][0]["f1"]
            if best["f1"] - theirs < margin:
                log(f"cell separation: the settings of {source} kept (F1 {theirs:.4f}, not "
                    f"{margin} below the best)")
                params = inherited
    elif not cases and inherited is not None:
        log(f"cell separation and edge slivers: no validation images; the settings of "
            f"{source} kept ({inherited.as_dict()})")
        return inherited
    else:
        params = DEFAULT_CENTRES if centres else DEFAULT_DISTANCE
        log(f"cell separation ({method}): no validation boxes to tune on; defaults")
    judged = [(case, g) for case, g in zip(cases, groups or [""] * len(cases))
              if case[2] is not None or case[3] is not None]
    if judged:
        chosen, rows = tune_edges([case for case, _ in judged], params,
                                  edge_grid_for(cell_diameter), groups=[g for _, g in judged])
        save_csv(run_dir / "edge_tuning.csv", rows, list(rows[0]))
        if margin and params is inherited:
            theirs = tune_edges([case for case, _ in judged], params, (params.edge_min_area,),
                                groups=[g for _, g in judged])[1][0]["score"]
            if max(r["score"] for r in rows) - theirs < margin:
                log(f"edge slivers: the setting of {source} kept ({params.edge_min_area} px)")
                return params
        params = chosen
        log(f"edge slivers: pieces under {params.edge_min_area} px at the image edge "
            f"dropped: val score {rows[0]['score']:.4f} -> {max(r['score'] for r in rows):.4f} "
            f"(each dataset by its own score: mask Dice, else cell F1 against boxes)")
    return params
