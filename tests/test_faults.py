"""Faults: processes killed with SIGKILL at random points, and full disks.

`train` killed during an epoch, while writing a checkpoint, or while writing the feature
cache, then resumed, ends with the same weights as a run that was never stopped, and
leaves no checkpoint or cache file that loads but is corrupt. `predict` killed mid-batch
and re-run with --resume ends with the outputs of a clean run. A full disk gives a clear
error naming the file and leaves no partial outputs.

The kills happen in child processes: a small script patches one writer (or the training
step) to SIGKILL its own process at the n-th call, n drawn at random (seeded).
"""

from __future__ import annotations

import csv
import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bloomseg.cli import EXIT_FAILED, EXIT_OK, EXIT_SKIPPED, main
from bloomseg.train.cache import load_checked
from conftest import write_dataset

TESTS = Path(__file__).resolve().parent

CHILD = textwrap.dedent("""
    import contextlib, os, signal, sys
    sys.path.insert(0, {tests!r})
    import torch
    import bloomseg.files, bloomseg.train.cache, bloomseg.train.run
    from conftest import tiny_vit

    point, n = {point!r}, {n}
    calls = [0]

    def due():
        calls[0] += 1
        return calls[0] == n

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class Half:  # a file that dies after writing half of what it is given
        def __init__(self, f):
            self.f = f
        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            os.fsync(self.f.fileno())
            die()
        def __getattr__(self, name):
            return getattr(self.f, name)

    def dying_output(original, wanted):
        @contextlib.contextmanager
        def output(path, *args, **kwargs):
            with original(path, *args, **kwargs) as f:
                yield Half(f) if wanted(str(path)) and due() else f
        return output

    if point == "step":
        step = bloomseg.train.run._Run._step
        def dying_step(self, *args, **kwargs):
            if due():
                die()
            return step(self, *args, **kwargs)
        bloomseg.train.run._Run._step = dying_step
    elif point == "checkpoint":
        bloomseg.files.atomic_output = dying_output(bloomseg.files.atomic_output,
                                                 lambda p: p.endswith(".pt"))
    elif point == "cache":
        bloomseg.train.cache.atomic_output = dying_output(bloomseg.train.cache.atomic_output,
                                                    lambda p: "features" in p)
    elif point == "predict":  # the n-th output is written in full, then the process dies
        atomic_path = bloomseg.files.atomic_path
        @contextlib.contextmanager
        def dying_path(path):
            with atomic_path(path) as tmp:
                yield tmp
                if due():
                    die()
        bloomseg.files.atomic_path = dying_path

    {body}
""")


def run_child(point: str, n: int, body: str) -> subprocess.CompletedProcess:
    code = CHILD.format(tests=str(TESTS), point=point, n=n, body=textwrap.dedent(body))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, env=os.environ | {"OMP_NUM_THREADS": "2"})


def train_body(data: Path, out: Path, cache: Path, resume: bool = False) -> str:
    settings = dict(data=str(data), out=str(out), cache_dir=str(cache), tile=56,
                    tiles_per_image=4, batch_size=4, epochs=3, lr=3e-3, seed=3)
    call = (f"resume({str(out)!r}, backbone=tiny_vit(), progress=False)" if resume else
            f"train(TrainConfig(**{settings!r}), backbone=tiny_vit(), progress=False)")
    return f"""
        from bloomseg.train.config import TrainConfig
        from bloomseg.train.run import resume, train
        {call}
    """


def weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: torch.load(run / name, weights_only=True)["state"] for name in ("best.pt", "last.pt")}


@pytest.fixture(scope="module")
def training(tmp_path_factory) -> tuple[Path, dict]:
    """(dataset, the weights of a run that was never stopped)."""
    root = tmp_path_factory.mktemp("faults")
    data = write_dataset(root / "data", boxes=True)
    result = run_child("none", 0, train_body(data, root / "clean", root / "cache-clean"))
    assert result.returncode == 0, result.stderr[-3000:]
    return data, weights(root / "clean")


# (where, the largest n to draw: below the calls a 3-epoch run makes there)
KILL_POINTS = {"step": 12, "checkpoint": 4, "cache": 40}
SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_train_killed_anywhere_resumes_to_the_same_weights(point, seed, training, tmp_path):
    data, clean = training
    n = int(np.random.default_rng([seed, len(point)]).integers(1, KILL_POINTS[point] + 1))
    run, cache = tmp_path / "run", tmp_path / "cache"
    killed = run_child(point, n, train_body(data, run, cache))
    assert killed.returncode == -9, f"not killed at call {n} of {point}: {killed.stderr[-2000:]}"

    # nothing that loads may be corrupt: checkpoints load whole, cache files check out
    for name in ("best.pt", "last.pt"):
        if (run / name).exists():
            torch.load(run / name, weights_only=True)
    for path in cache.rglob("*.npy"):
        assert load_checked(path) is not None, path

    resumed = run_child("none", 0, train_body(data, run, cache, resume=True))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = weights(run)
    for name in clean:
        assert final[name].keys() == clean[name].keys()
        for key in clean[name]:
            assert torch.equal(final[name][key], clean[name][key]), f"{point} {n}: {name} {key}"
    assert not list(run.glob(".*.tmp"))  # what the kill left in the run folder is gone


def test_a_damaged_cache_file_is_recomputed_not_read(training, tmp_path):
    """A cache file damaged after it was written (one byte flipped) fails its checksum,
    and the run that meets it recomputes it and still ends with the same weights."""
    data, clean = training
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert run_child("none", 0, train_body(data, run, cache)).returncode == 0
    shards = sorted(cache.rglob("*.npy"))
    for path in shards[::3]:
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x10
        path.write_bytes(bytes(raw))
        assert load_checked(path) is None
    result = run_child("none", 0, train_body(data, tmp_path / "again", cache))
    assert result.returncode == 0, result.stderr[-3000:]
    again = weights(tmp_path / "again")
    assert all(torch.equal(again["best.pt"][k], clean["best.pt"][k]) for k in clean["best.pt"])
    assert all(load_checked(path) is not None for path in shards)  # replaced


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model")
    data = write_dataset(root / "data", size=(48, 64))
    assert main(["train", "--data", str(data), "--out", str(root / "run"), "--backbone", "unet",
                 "--tile", "42", "--epochs", "1", "--cache-dir", str(root / "cache"),
                 "-q"]) == EXIT_OK
    return root / "run"


def images(folder: Path, count: int = 5, size: tuple[int, int] = (48, 64)) -> Path:
    write_dataset(folder.parent / "images", n_train=count, n_test=0, size=size, seed=7)
    return folder.parent / "images" / "train" / "original"


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def without_seconds(data: bytes) -> list[dict]:
    rows = list(csv.DictReader(data.decode().splitlines()))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_predict_killed_mid_batch_resumes_to_a_clean_runs_outputs(seed, model, tmp_path):
    inputs = images(tmp_path / "in")
    args = ["predict", str(model), str(inputs), "--instances", "--coco", "-q"]
    assert main(args + ["-o", str(tmp_path / "clean")]) == EXIT_OK
    n = int(np.random.default_rng(seed).integers(2, 5 * 6))  # 6 outputs per image
    killed = run_child("predict", n, f"""
        from bloomseg.cli import main
        main({args + ["-o", str(tmp_path / "out")]!r})
    """)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert main(args + ["-o", str(tmp_path / "out"), "--resume"]) == EXIT_OK

    clean, resumed = files(tmp_path / "clean"), files(tmp_path / "out")
    assert clean.keys() == resumed.keys()  # no temporary file is left either
    for name in clean:
        if name == "report.html":  # holds the time it was written
            continue
        if name == "summary.csv" or name.startswith(".bloomseg"):
            if name == "summary.csv":
                assert without_seconds(clean[name]) == without_seconds(resumed[name])
            continue
        assert clean[name] == resumed[name], name


def test_resume_redoes_a_torn_image_and_keeps_finished_ones(model, tmp_path):
    inputs = images(tmp_path / "in", count=3)
    out = tmp_path / "out"
    args = ["predict", str(model), str(inputs), "--instances", "-q", "-o", str(out)]
    assert main(args) == EXIT_OK
    first = sorted(inputs.iterdir())
    (out / f"{first[1].stem}_labels.tif").unlink()  # as if killed before it was written
    (out / ".bloomseg" / f"{first[1].stem}.json").unlink()
    kept = (out / f"{first[0].stem}_mask.png").stat().st_mtime_ns
    assert main(args) == EXIT_SKIPPED  # without --resume: outputs exist, skipped
    assert main(args + ["--resume"]) == EXIT_OK
    assert (out / f"{first[1].stem}_labels.tif").is_file()
    assert (out / f"{first[0].stem}_mask.png").stat().st_mtime_ns == kept  # not redone
    with pytest.raises(SystemExit):  # one or the other
        main(args + ["--resume", "--overwrite"])


def _no_partial_files(out: Path) -> None:
    for path in out.rglob("*"):
        assert not path.name.endswith(".tmp"), path
        if path.suffix == ".png":
            with Image.open(path) as img:
                img.load()  # complete, or it would not be there


def test_disk_full_is_a_clear_error_and_leaves_nothing_partial(model, tmp_path, monkeypatch, capsys):
    """ENOSPC injected where the system reports it for a write that does not fit."""
    import bloomseg.files

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(bloomseg.files.os, "fsync", full)
    out = tmp_path / "out"
    code = main(["predict", str(model), str(images(tmp_path / "in", count=2)), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert f"error: {out / 'summary.csv'}: cannot be written (No space left on device)" in err
    assert not [p for p in out.rglob("*") if p.is_file()]  # no output, whole or partial


def test_a_real_full_file_system(model, tmp_path, capsys):
    """A 320 KiB tmpfs: outputs that fit are written whole, the images whose outputs do
    not are reported, and nothing is left half written."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN); the ENOSPC "
                    "injection test covers the same path")
    try:
        inputs = images(tmp_path / "in", count=8, size=(240, 320))
        code = main(["predict", str(model), str(inputs), "-o", str(mount / "out"), "-q"])
        captured = capsys.readouterr()
        assert code in (EXIT_SKIPPED, EXIT_FAILED)
        assert "No space left on device" in captured.out + captured.err + "".join(
            p.read_text() for p in (mount / "out").glob("summary.csv"))
        _no_partial_files(mount / "out")
        complete = [p for p in (mount / "out").glob("*_mask.png")
                    if (mount / "out" / p.name.replace("_mask", "_overlay")).is_file()]
        assert len(complete) < 8  # the disk did run out
    finally:
        subprocess.run(["umount", str(mount)], check=False)
