"""``report.html``: a page a person opens after a predict or evaluate run.

The page is one HTML file with its style inline and no scripts; the pictures it shows
are the run's own PNGs beside it, referenced by relative links, so the folder can be
moved or zipped whole and the page still works.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote

from bloomseg.files import atomic_output, printable

REPORT = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       background: #fff; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.meta { color: #555; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
.bad { color: #b00020; } .note { color: #555; font-size: .9em; }
.warning { color: #b00020; border: 1px solid #b00020; padding: .5em; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; width: 380px; } figure.wide { width: 100%; }
figure img { width: 100%; border: 1px solid #ccc; }
figure.cells { width: auto; max-width: 100%; } figure.cells img { width: auto; max-width: 100%; }
figcaption { font-size: .85em; color: #333; }
.plots img { max-width: 560px; width: 100%; border: 1px solid #ddd; }
"""


def _e(value: object) -> str:
    return html.escape(printable(str(value)), quote=True)


def _url(path: str) -> str:
    # a file name that is not UTF-8 keeps its own bytes, percent-encoded
    return quote(path.encode("utf-8", "surrogateescape"))


def _link(path: str, text: str | None = None) -> str:
    return f'<a href="{_url(path)}">{_e(text or path)}</a>'


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def table(header: Sequence[str], rows: Iterable[Sequence[object]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (cells that are already HTML)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else _e(_fmt(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(path: str, caption: str, wide: bool = False, cells: bool = False) -> str:
    """A linked picture with its caption: 380 px wide, the page's width (``wide``), or
    at its own size (``cells``: a sheet of cells, every cell the same size on screen
    however many the sheet holds)."""
    cls = ' class="wide"' if wide else ' class="cells"' if cells else ""
    return (f'<figure{cls}><a href="{_url(path)}"><img src="{_url(path)}" alt="{_e(caption)}" '
            f'loading="lazy"></a><figcaption>{_e(caption)}</figcaption></figure>')


def write_page(out_dir: str | Path, title: str, subtitle: str, sections: list[tuple[str, str]]) -> Path:
    """Write ``out_dir/report.html`` atomically.

    Args:
        out_dir: the run's output folder (the pictures the page links are in it).
        title: page heading.
        subtitle: one line under it (escaped).
        sections: (heading, body HTML) pairs.

    Returns:
        The report's path.
    """
    from bloomseg import __version__

    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{_e(title)}</h1><p class=\"meta\">{_e(subtitle)}<br>bloomseg {__version__}, {when}</p>"]
    parts += [f"<h2>{_e(heading)}</h2>{body}" for heading, body in sections]
    parts.append("</body></html>\n")
    path = Path(out_dir) / REPORT
    with atomic_output(path, "w", encoding="utf-8") as f:
        f.write("".join(parts))
    return path


def predict_report(out_dir: str | Path, rows: list[dict], model: str, instances: bool,
                   files: Sequence[str] = (), total: dict | None = None, run=None) -> Path:
    """The report of a ``segment_files`` run: counts, a table of images with links to
    their outputs, and every overlay. It shows what it is handed and reads nothing back.

    Args:
        out_dir: the output folder.
        rows: summary rows (see :data:`bloomseg.outputs.run.SUMMARY_COLUMNS`); each
            segmented one carries ``files``, {kind: file name} of its outputs.
        model: what was run, as the user named it.
        instances: cells were separated (label, table and GeoJSON files exist).
        files: the run-level files to link (summary.csv, the COCO file).
        total: the run's row of class counts and parasitemia, where cells were named.
        run: the run's verdict (:class:`bloomseg.quality.run.RunVerdict`), where cells
            were named: shown first.
    """
    out_dir = Path(out_dir)
    ok = [r for r in rows if r["status"] == "ok"]
    problems = [r for r in rows if r["status"] != "ok"]
    summary = [("images", len(rows)), ("segmented", len(ok)), ("not segmented", len(problems))]
    if instances and ok:
        summary += [("cells", sum(int(r["cells"]) for r in ok)),
                    ("cells not cut by the border", sum(int(r["complete_cells"]) for r in ok))]
    flagged = [r for r in ok if r.get("qc") == "check"]
    if any(r.get("qc") for r in ok):
        summary.append(("to check (quality verdict)", len(flagged)))
    lines = [table(["", ""], summary)]
    lines.append("<p>" + " · ".join(_link(f) for f in files) + "</p>")
    sections = ([("The run's classes", _run_section(run))] if run is not None else []) + [
        ("Summary", "".join(lines))]
    if flagged:
        sections.append(("Check these first", _check_section(flagged)))
    named = [r for r in ok if r.get("infected", "") != ""]
    if named:
        sections.append(("Cell classes", _classes_section(named, total)))

    image_rows = []
    for r in ok:
        stem = Path(r["image"]).stem
        names = r.get("files", {}).values()
        links = " ".join(_link(n, n[len(stem):].lstrip("_.") or n) for n in names)
        diameter = f"{r['diameter']} px ({r['diameter_source']})" if r.get("diameter") else ""
        if r.get("diameter_note"):
            diameter += f"; {r['diameter_note']}"
        image_rows.append([_e(Path(r["image"]).name), _e(f"{r['width']}x{r['height']}"),
                           _e(r["cell_fraction"]), _e(r["cells"]), _e(r["complete_cells"]),
                           _e(diameter), _e(r["seconds"]), _e(r.get("qc", "")), links])
    if image_rows:
        sections.append(("Images", table(["image", "size", "cell fraction", "cells",
                                          "not cut by border", "cell diameter", "seconds",
                                          "quality", "files"], image_rows, raw=True)))
        gallery = "".join(
            figure(r["files"]["overlay"],
                   f"{Path(r['image']).name}: " + (f"{r['cells']} cells ({r['complete_cells']} "
                                                   "not cut by the border)" if instances
                                                   else f"cell fraction {float(r['cell_fraction']):.3f}"))
            for r in ok if "overlay" in r.get("files", {}))
        note = ("<p class=\"note\">Each cell has its own colour and an outline.</p>" if instances
                else "<p class=\"note\">Cell pixels are tinted.</p>")
        sections.append(("Overlays", note + f'<div class="gallery">{gallery}</div>'))
    if problems:
        sections.append(("Not segmented", table(["image", "reason"], [
            [Path(r["image"]).name, r["status"]] for r in problems])))
    return write_page(out_dir, "bloomseg predict", f"model: {model}", sections)


def _run_section(run) -> str:
    """The run's verdict: one line, and where it is ``check``, what to do."""
    kind = {"check": "warning", "ok": "note"}.get(run.status, "note")
    return f'<p class="{kind}">{_e(run.text)}</p>'


def _check_section(flagged: list[dict]) -> str:
    """The images whose quality verdict is ``check``, each with its reasons and overlay."""
    from bloomseg.quality import reasons_text

    note = ("<p class=\"note\">The quality verdict found something unusual in these "
            "images: look at each before you count on it (summary.csv: <code>qc</code>, "
            "<code>qc_reasons</code>).</p>")
    rows = [[_e(Path(r["image"]).name), _e(reasons_text(r["qc_reasons"].split(";")))]
            for r in flagged]
    gallery = "".join(figure(r["files"]["overlay"], f"{Path(r['image']).name}: "
                             + ", ".join(r["qc_reasons"].split(";")))
                      for r in flagged if "overlay" in r.get("files", {}))
    return note + table(["image", "why"], rows, raw=True) + f'<div class="gallery">{gallery}</div>'


def _classes_section(named: list[dict], total: dict | None) -> str:
    """Cells of each class and the parasitemia per image and for the run, then each
    image's infected cells for a person to check."""
    from bloomseg.cells.types import UNCERTAIN_BELOW
    from bloomseg.data.vocabulary import KINDS

    def interval(r: dict) -> str:
        if r.get("parasitemia_percent", "") == "":
            return "no red cells"
        doubtful = int(r.get("infected_uncertain") or 0)
        return (f"{float(r['parasitemia_percent']):.2f}% ({float(r['parasitemia_low']):.2f}"
                f"&ndash;{float(r['parasitemia_high']):.2f}%)"
                + (f"; {doubtful} of {r['infected']} infected calls uncertain: "
                   f"{float(r['parasitemia_certain_percent']):.2f}% without them"
                   if doubtful else ""))

    rows = [[_e(Path(r["image"]).name)] + [_e(r[k]) for k in KINDS] + [interval(r)]
            for r in named]
    if total is not None:
        rows.append([f"<b>{_e(total['image'])}</b>"] + [f"<b>{_e(total[k])}</b>" for k in KINDS]
                    + [f"<b>{interval(total)}</b>"])
    body = table(["image", *KINDS, "parasitemia (95% interval)"], rows, raw=True)
    body += ("<p class='note'>Parasitemia: infected red cells per 100 red cells, with its "
             "95% Wilson interval. Every cell the model found is counted, those cut by the "
             "border too. Classes are the model's calls: check the infected cells below. "
             f"A call whose probability is under {UNCERTAIN_BELOW:g}, or a cell unlike any "
             "the classifier learnt, is marked uncertain in the cell table (column "
             "<code>uncertain</code>) and counted here, with the parasitemia without the "
             "uncertain infected calls.</p>")
    pictures = "".join(figure(r["files"]["infected"], f"{Path(r['image']).name}: "
                              f"{r['infected']} cells called infected", cells=True)
                       for r in named if "infected" in r.get("files", {}))
    if pictures:
        body += f"<h3>Infected cells</h3><div class='gallery'>{pictures}</div>"
    return body


def _class_scores(c: dict) -> str:
    """Per-class scores of matched cells, infected recall over every infected box, and
    the parasitemia error."""
    body = table(["class", "true", "called", "correct", "precision", "recall", "F1"], [
        [name, v["true"], v["called"], v["correct"], v["precision"], v["recall"], v["f1"]]
        for name, v in c["per_class"].items()])
    if "infected" in c:
        i = c["infected"]
        low, high = i["recall_95_interval"]
        body += table(["", ""], [
            ["infected boxes found (called infected)", f"{i['found']} of {i['boxes']}"],
            ["infected recall, 95% Wilson interval", f"{low:.3f} to {high:.3f}"]]
            + ([["parasitemia mean absolute error (points)",
                 c["parasitemia"]["mean_absolute_error_points"]]] if "parasitemia" in c else []))
    return body + ("<p class='note'>Cells matched one to one to true boxes; a class the "
                   "dataset does not label has no row. Few infected cells: read the "
                   "interval.</p>")


def evaluate_report(out_dir: str | Path, metrics: dict, per_image: list[dict], model: str,
                    data: str, plots: Sequence[str], pictures: Sequence[str]) -> Path:
    """The report of an ``evaluate`` run: pixel and cell metrics, plots, pictures of the
    best and worst images, and the per-image table.

    Args:
        out_dir: the output folder.
        metrics, per_image: what metrics.json and per_image_metrics.json hold.
        model: what was evaluated, as the user named it.
        data: the split evaluated on.
        plots: plot files in ``out_dir`` to show.
        pictures: visualization files (relative to ``out_dir``) to show.
    """
    sections = []
    if "dice" in metrics:  # a split of boxes only has no pixel scores
        pixel = table(["", "cell", "background", "mean"], [
            [name, metrics[key]["cell"], metrics[key]["background"], metrics[key]["mean"]]
            for name, key in (("Dice", "dice"), ("IoU", "iou"), ("precision", "precision"),
                              ("recall", "recall"))])
        pixel += table(["", ""], [["accuracy", metrics["accuracy"]],
                                  ["per-image mean Dice", metrics["per_image_mean"]["dice"]],
                                  ["images", metrics["num_samples"]]])
        sections.append(("Pixels", pixel + "<p class=\"note\">From confusion counts over all "
                         "pixels of the images with masks.</p>"))
    inst = metrics.get("instances", {})
    if "boxes" in inst:
        b = inst["boxes"]
        sections.append(("Cells against boxes", table(["", ""], [
            ["F1", b["f1"]], ["precision", b["precision"]], ["recall", b["recall"]],
            ["matched / unmatched predicted / unmatched true", f"{b['tp']} / {b['fp']} / {b['fn']}"],
            ["true cells (boxes)", b["true_cells"]],
            ["predicted cells not cut by the border", b["predicted_complete_cells"]],
            ["mean relative count error", f"{b['mean_relative_count_error']:.2%}"],
            ["strict F1 (border cells kept)", b["strict"]["f1"]]])
            + "<p class=\"note\">Predicted cells' bounding boxes matched one-to-one to the true "
              "boxes at IoU &ge; 0.5; unmatched cells cut by the image border are not counted "
              "as false positives.</p>"))
    if "masks" in inst:
        m = inst["masks"]
        sections.append(("Cells against label masks", table(["", ""], [
            ["F1", m["f1"]], ["precision", m["precision"]], ["recall", m["recall"]],
            ["panoptic quality", m["panoptic_quality"]]])))
    if "classes" in metrics:
        sections.append(("Cell classes", _class_scores(metrics["classes"])))
    if "quality" in metrics:
        q = metrics["quality"]
        flagged = [[_e(r["image"]), _e("failed" if r["failed"] else "good"),
                    _e(r["qc_reasons"].replace(";", ", "))] for r in per_image
                   if r.get("qc") == "check"]
        sections.append(("Quality verdict", table(["", ""], [
            ("failed images flagged", f"{q['failed_flagged']} of {q['failed']}"),
            ("good images flagged", f"{q['good_flagged']} of {q['images'] - q['failed']}")])
            + f"<p class=\"note\">{_e(q['definition'])}.</p>"
            + (table(["image flagged", "truth", "reasons"], flagged, raw=True) if flagged else "")))
    sections.append(("Plots", '<div class="gallery plots">' + "".join(
        figure(p, p.rsplit(".", 1)[0].replace("_", " ")) for p in plots) + "</div>"))
    if pictures:
        sections.append(("Best and worst images",
                         "<p class=\"note\">image | cells | errors: true positive green, false "
                         "positive red, false negative blue.</p>" + "".join(
                             figure(p, Path(p).stem.replace("_", " ", 1), wide=True) for p in pictures)))
    if metrics.get("skipped"):
        sections.append(("Skipped images", '<p class="bad">These could not be used and are '
                         "not in the metrics.</p>" + table(
                             ["image", "reason"], [[s["image"], s["reason"]] for s in metrics["skipped"]])))
    columns = [c for c in ("image", "dice", "iou", "true_cells", "complete_cells", "cell_tp",
                           "cell_fp", "cell_fn", "cell_f1", "count_error", "true_parasitemia",
                           "predicted_parasitemia", "diameter", "diameter_source")
               if any(c in r for r in per_image)]
    sections.append(("Per image", table(columns, [[r.get(c) for c in columns] for r in per_image])
                     + "<p>" + " · ".join(_link(f) for f in ("metrics.json", "per_image_metrics.json"))
                     + "</p>"))
    return write_page(out_dir, "bloomseg evaluate", f"model: {model}; data: {data}", sections)
