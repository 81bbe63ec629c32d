"""Build-time pages (mkdocs-gen-files), each from its one source so none can drift:

- ``reference/cli.md``: the command-line reference, from the argparse parsers;
- ``reference/benchmarks.md``: every benchmark script and what it measures, from its
  docstring;
- ``model-card.md``, ``reliability.md``, ``changelog.md``: the files that ship or sit at
  the repository's root, their links made to work from the site;
- ``index.md``: the README (the front page), with a real smear segmented by the default
  model and the report it wrote (``example/``), where the smears are found (their licence
  keeps them out of the repository; elsewhere a synthetic smear, said so).
"""

import ast
import re
import tempfile
from pathlib import Path

import mkdocs_gen_files

from bloomseg.cli.reference import markdown

ROOT = Path(__file__).resolve().parent.parent

with mkdocs_gen_files.open("reference/cli.md", "w") as f:
    f.write(markdown())

rows = []
for script in sorted((ROOT / "benchmarks").glob("*.py")):
    text = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    summary, _, rest = text.partition("\n\n")
    usage = rest.strip().split("\n\n")[0] if rest.strip().startswith("python") else ""
    rows.append(f"## `{script.name}`\n\n{' '.join(summary.split())}\n")
    if usage:
        rows.append(f"```bash\n{usage.strip()}\n```\n")
with mkdocs_gen_files.open("reference/benchmarks.md", "w") as f:
    f.write("# Benchmarks\n\nThe scripts under `benchmarks/` (run from the repository's root), "
            "each with the first lines of its own docstring: what it measures and how it "
            "is called. Figures come from these, never from timed tests.\n\n" + "\n".join(rows))


def shifted(text: str) -> str:
    """A file's headings one level down, its title dropped (the page gives its own)."""
    body = text.split("\n", 1)[1] if text.startswith("# ") else text
    return re.sub(r"^(#+) ", r"#\1 ", body, flags=re.M)


card = (ROOT / "src/bloomseg/model/packaged/default/MODEL_CARD.md").read_text(encoding="utf-8")
card = card.replace("../../../../../docs/", "")  # its pictures live in docs/
with mkdocs_gen_files.open("model-card.md", "w") as f:
    f.write("# Model card\n\nThe default model's `MODEL_CARD.md`, as it ships in "
            "`src/bloomseg/model/packaged/default/`.\n\n" + shifted(card))

for name, title in (("RELIABILITY.md", "Reliability"), ("CHANGELOG.md", "Changelog")):
    text = (ROOT / name).read_text(encoding="utf-8")
    with mkdocs_gen_files.open(f"{name.lower()}", "w") as f:
        f.write(f"# {title}\n" + shifted(text))


def _detail(overlay: Path, cells: Path, size: tuple[int, int] = (900, 520)) -> str:
    """A window of the overlay at its own resolution (outlines vanish when a whole smear
    is shrunk to a page), around an infected cell where there is one; its name."""
    import csv
    import io

    from PIL import Image

    picture = Image.open(overlay)
    with open(cells, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    chosen = next((r for r in rows if r["class"] == "infected"), rows[0] if rows else None)
    cx, cy = ((float(chosen["centroid_x"]), float(chosen["centroid_y"])) if chosen
              else (picture.width / 2, picture.height / 2))
    w, h = min(size[0], picture.width), min(size[1], picture.height)
    x0 = int(min(max(cx - w / 2, 0), picture.width - w))
    y0 = int(min(max(cy - h / 2, 0), picture.height - h))
    buffer = io.BytesIO()
    picture.crop((x0, y0, x0 + w, y0 + h)).save(buffer, format="PNG")
    with mkdocs_gen_files.open("example/detail.png", "wb") as f:
        f.write(buffer.getvalue())
    return "detail.png"


def example(smears: int = 3) -> str:
    """Segment a few smears with the default model into ``example/`` of the site; the
    Markdown that shows the one with most infected cells, and the report."""
    import csv

    from bloomseg.cli import main
    from bloomseg.tools.doctor import find_data

    data = find_data()
    real = data is not None
    with tempfile.TemporaryDirectory() as tmp:
        if not real:
            main(["synthetic", "-o", f"{tmp}/data", "--train", "0", "--test", "1"])
            data = Path(tmp) / "data"
        chosen = Path(tmp) / "smears"
        chosen.mkdir()
        for image in sorted((data / "test" / "original").iterdir())[:smears]:
            (chosen / image.name).symlink_to(image)
        out = Path(tmp) / "out"
        main(["predict", "default", str(chosen), "-o", str(out), "--cells", "-q"])
        for path in out.iterdir():
            if path.is_file():
                with mkdocs_gen_files.open(f"example/{path.name}", "wb") as f:
                    f.write(path.read_bytes())
        with open(out / "summary.csv", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
        image = Path(max(rows, key=lambda r: int(r["infected"] or 0))["image"])
        picture = _detail(out / f"{image.stem}_overlay.png", out / f"{image.stem}_cells.csv")
    what = (f"A BBBC041 malaria test smear (`{image.name}`, Ljosa et al., CC BY-NC-SA 3.0)"
            if real else "A synthetic smear (the real smears were not found when this was built)")
    return (f"![{what}, its cells outlined in their class colours](example/{picture})"
            f"\n\n*{what}, a window at full resolution, segmented by the default model: red "
            f"cells, infected cells, white cells and platelets each in their class colour. "
            f"[The report it wrote](example/report.html) for {len(rows)} smears has the "
            f"counts, the parasitemia, the infected cells pictured and the quality verdict.*")


readme = (ROOT / "README.md").read_text(encoding="utf-8")
picture = re.search(r"^!\[.*?\n\n\*.*?\*\n", readme, flags=re.M | re.S)
home = readme.replace(picture.group(0), example() + "\n") if picture else readme
for source, target in (("](docs/", "]("), ("](RELIABILITY.md)", "](reliability.md)"),
                       ("](src/bloomseg/model/packaged/default/MODEL_CARD.md)", "](model-card.md)"),
                       ("](CHANGELOG.md)", "](changelog.md)"), ("[CI](.ci/run)", "CI (`.ci/run`)")):
    home = home.replace(source, target)
with mkdocs_gen_files.open("index.md", "w") as f:
    f.write(home)
