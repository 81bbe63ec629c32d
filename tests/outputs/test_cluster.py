"""Prediction on a Dask cluster: the in-process outputs byte for byte, the model loaded
once per worker, and a worker killed mid-run costing nothing."""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloomseg.cli import EXIT_OK, EXIT_SKIPPED, main
from bloomseg.data.images import read_labels
from bloomseg.data.synthetic import REAL_SCALE, smear
from bloomseg.outputs.run import OutputOptions
from bloomseg.outputs.summary import TOTAL

distributed = pytest.importorskip("distributed", reason="needs pip install 'bloomseg[distributed]'")

IMAGES = 8


@pytest.fixture(scope="module")
def smears(tmp_path_factory) -> Path:
    """Synthetic smears with cells of real size, and one file that is not an image."""
    folder = tmp_path_factory.mktemp("smears")
    rng = np.random.default_rng(5)
    for i in range(IMAGES):
        image, _ = smear(rng, 480, 640, radius=REAL_SCALE["radius"], density=REAL_SCALE["density"])
        Image.fromarray(image).save(folder / f"smear_{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    return folder


@pytest.fixture(scope="module")
def in_process(smears, tmp_path_factory) -> Path:
    """The outputs of the same job run in this process."""
    out = tmp_path_factory.mktemp("in_process")
    assert main(["predict", "default", str(smears), "-o", str(out), "--instances", "-q"]) == EXIT_SKIPPED
    return out


def summary(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    # every image once, then the run's total of the cells' classes
    assert rows[-1]["image"] == TOTAL and rows[-1]["status"] == f"total of {IMAGES} images"
    rows = rows[:-1]
    by_stem = {Path(r["image"]).stem: r for r in rows}
    assert len(by_stem) == len(rows) == IMAGES + 1
    return by_stem


def assert_same_outputs(out: Path, reference: Path) -> None:
    """Masks byte for byte, the same cells, tables and counts; nothing left half-written."""
    rows, expected = summary(out), summary(reference)
    assert rows["broken"]["status"].startswith("failed:") and "broken.png" in rows["broken"]["status"]
    for i in range(IMAGES):
        stem = f"smear_{i}"
        assert rows[stem]["status"] == "ok"
        for key in ("cells", "complete_cells", "cell_fraction", "width", "height"):
            assert rows[stem][key] == expected[stem][key], (stem, key)
        for name in (f"{stem}_mask.png", f"{stem}_cells.csv", f"{stem}.geojson"):
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name
        np.testing.assert_array_equal(read_labels(out / f"{stem}_labels.tif"),
                                      read_labels(reference / f"{stem}_labels.tif"))
    # no temporary files left; the records of finished images (for --resume) only
    assert [p.name for p in out.glob(".*")] == [".bloomseg"]
    assert sorted(p.name for p in (out / ".bloomseg").iterdir()) == \
        sorted(f"smear_{i}.json" for i in range(IMAGES))


def test_local_cluster_writes_the_in_process_outputs(tmp_path, smears, in_process):
    out = tmp_path / "cluster"
    code = main(["predict", "default", str(smears), "-o", str(out), "--instances", "-q",
                 "--workers", "2"])
    assert code == EXIT_SKIPPED  # the broken file
    assert_same_outputs(out, in_process)
    assert (out / "report.html").is_file()


@pytest.fixture()
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def test_existing_cluster_loads_the_model_once_per_worker(tmp_path, smears, in_process, client):
    out = tmp_path / "scheduler"
    address = client.scheduler.address
    assert main(["predict", "default", str(smears), "-o", str(out), "--instances", "-q",
                 "--scheduler", address]) == EXIT_SKIPPED
    assert_same_outputs(out, in_process)
    loads = client.run(lambda: __import__("bloomseg.outputs.cluster").outputs.cluster.loads)
    assert sum(loads.values()) >= 1 and all(n <= 1 for n in loads.values()), loads
    # a second run on the same workers loads nothing more
    assert main(["predict", "default", str(smears / "smear_0.png"), "-o", str(tmp_path / "again"),
                 "-q", "--scheduler", address]) == EXIT_OK
    assert client.run(lambda: __import__("bloomseg.outputs.cluster").outputs.cluster.loads) == loads


def test_a_worker_killed_mid_run_loses_nothing(tmp_path, smears, in_process, client):
    from bloomseg.data.images import expand_inputs
    from bloomseg.inference.options import SegmenterSpec
    from bloomseg.outputs.cluster import segment_files_on_cluster

    out = tmp_path / "killed"
    pids = client.run(os.getpid)
    done: dict = {}
    job = threading.Thread(target=lambda: done.update(rows=segment_files_on_cluster(
        client, SegmenterSpec("default"), expand_inputs([str(smears)]), out,
        OutputOptions(cells=True), progress=False)))
    job.start()
    # once the batch is under way, kill a worker that has a task in hand
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        busy = [w for w, keys in client.processing().items() if keys]
        if busy and list(out.glob("*_mask.png")):
            victim = busy[0]
            os.kill(pids[victim], signal.SIGKILL)
        time.sleep(0.05)
    job.join(timeout=300)
    assert victim is not None and not job.is_alive()
    assert len(done["rows"]) == IMAGES + 1
    assert_same_outputs(out, in_process)
