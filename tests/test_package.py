"""What the package ships: no file holds a path of the machine it was made on, and the
command line starts without torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import bloomseg

ROOT = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"(?<![\w.~])(/work/|/home/|/root/|/Users/|/tmp/|[A-Za-z]:\\\\)")
"""Absolute paths of a build or training machine (a home, a work tree, a drive letter)."""


def shipped_files() -> list[Path]:
    """Everything a user receives: the package's files (the default model's config and
    card among them), the README, the documentation's pages, the changelog and the
    notebook with its stored outputs."""
    package = Path(bloomseg.__file__).resolve().parent
    return sorted(p for p in package.rglob("*") if p.is_file() and p.suffix in
                  (".py", ".json", ".md", ".txt")) + sorted((ROOT / "docs").rglob("*.md")) + [
        ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "RELIABILITY.md",
        ROOT / "examples" / "walkthrough.ipynb"]


def test_no_shipped_file_holds_a_machine_path():
    files = shipped_files()
    assert any(p.name == "config.json" for p in files) and len(files) > 40
    found = {str(p.relative_to(ROOT)): MACHINE_PATH.findall(p.read_text("utf-8"))
             for p in files}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_pattern_finds_machine_paths():
    """The check above can fail: it catches the paths an export used to leave."""
    config = {"data": "/work/shared/data/bbbc041seg", "init": "/home/me/runs/best.pt",
              "weights": "D:\\\\models\\\\DinoBloom-S.pth"}
    assert len(MACHINE_PATH.findall(json.dumps(config))) == 3
    assert not MACHINE_PATH.findall("~/.cache/bloomseg and ../shared/data and /proc/self")


def test_the_exported_default_holds_only_model_settings():
    from bloomseg.model.config import MODEL_SETTINGS
    from bloomseg.model.files import PACKAGED

    payload = json.loads((PACKAGED / "default" / "config.json").read_text("utf-8"))
    assert tuple(payload["config"]) == MODEL_SETTINGS


def test_import_and_help_do_not_load_torch():
    code = ("import sys, contextlib, io\n"
            "import bloomseg\n"
            "assert 'torch' not in sys.modules, 'import bloomseg loaded torch'\n"
            "from bloomseg.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    for argv in (['--help'], ['predict', '--help'], ['train', '--help']):\n"
            "        try:\n"
            "            main(argv)\n"
            "        except SystemExit:\n"
            "            pass\n"
            "print(sorted(m for m in ('torch', 'scipy', 'skimage', 'matplotlib') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
