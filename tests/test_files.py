"""Writing outputs: atomically, with ordinary permissions, and the overwrite rule."""

from __future__ import annotations

import pytest

from bloomseg.errors import OutputExistsError
from bloomseg.files import atomic_output, existing, refuse_existing, save_csv, save_json


def test_atomic_output_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as f:
            f.write(b"new, half written")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]
    with atomic_output(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"


def test_atomic_output_has_the_permissions_of_an_ordinary_file(tmp_path):
    import os

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with atomic_output(tmp_path / "atomic.txt", "w") as f:
        f.write("x")
    mode = os.stat(tmp_path / "atomic.txt").st_mode & 0o777
    assert mode == os.stat(plain).st_mode & 0o777 and mode & 0o044  # readable by others


def test_save_json_and_csv_round_trip(tmp_path):
    import csv
    import json

    save_json(tmp_path / "a.json", {"x": [1, 2.5, None]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2.5, None]}
    save_csv(tmp_path / "a.csv", [{"a": 1, "b": "x,y", "extra": 0}, {"a": 2, "b": ""}], ["a", "b"])
    with open(tmp_path / "a.csv", newline="") as f:
        assert list(csv.DictReader(f)) == [{"a": "1", "b": "x,y"}, {"a": "2", "b": ""}]


def test_refuse_existing_is_the_overwrite_rule(tmp_path):
    there, absent = tmp_path / "a.png", tmp_path / "b.png"
    there.write_bytes(b"x")
    refuse_existing([absent])  # nothing there: nothing to refuse
    refuse_existing([absent, there], overwrite=True)
    with pytest.raises(OutputExistsError, match=r"a\.png exists; pass --overwrite"):
        refuse_existing([absent, there])
    with pytest.raises(OutputExistsError, match="^holds a run$"):
        refuse_existing([there], message="holds a run")
    assert existing([absent, there, tmp_path]) == [there, tmp_path]
