"""Batch prediction on a Dask cluster: the job of :func:`bloomseg.outputs.run.segment_files`,
one image per task, on a local cluster of worker processes or an existing one (``dask
scheduler`` / ``dask worker``, dask-jobqueue on SLURM, Kubernetes).

Workers load the model once each (the first task on a worker loads it and later tasks
reuse it) and write every output themselves, atomically, to the output folder, which
must be shared storage that they and this process see at the same path. The summary,
COCO file and report are written here once all tasks are done. A task whose worker dies
is run again elsewhere by Dask; its outputs are replaced whole, never torn.

Needs ``dask[distributed]`` (``pip install 'bloomseg[distributed]'``); nothing else in
bloomseg imports Dask.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bloomseg.errors import BloomsegError
from bloomseg.inference.options import SegmenterSpec
from bloomseg.outputs.options import OutputOptions
from bloomseg.outputs.run import finish_run, planned_row, segment_image
from bloomseg.outputs.summary import SUMMARY_COLUMNS
from bloomseg.settings import Range

WORKERS = Range(int, 1, 1024)
"""Worker processes of a local cluster."""


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_LOCK = threading.Lock()
_LOADED: dict = {}
loads = 0
"""Models this process has loaded (on a worker: once per model, whatever the task count)."""


def _segmenter(spec: SegmenterSpec, threads: int | None):
    global loads
    import torch

    with _LOCK:
        if spec not in _LOADED:
            if threads is None:
                # Dask starts workers with OMP_NUM_THREADS=1; give torch this worker's
                # share of the machine, one share per task slot
                from distributed import get_worker

                threads = max(1, cpu_count() // get_worker().state.nthreads)
            torch.set_num_threads(threads)
            _LOADED[spec] = spec.load()
            loads += 1
        return _LOADED[spec]


def _run_task(spec: SegmenterSpec, path: str, out_dir: str, options: OutputOptions,
              threads: int | None) -> dict:
    return segment_image(_segmenter(spec, threads), path, out_dir, options)


@contextmanager
def connect(workers: int | None = None, scheduler: str | None = None) -> Iterator:
    """A Dask client: of a new local cluster of ``workers`` processes (one task slot
    each), or of the running cluster at ``scheduler`` (``tcp://HOST:PORT``).

    Raises:
        BloomsegError: Dask is not installed, or the scheduler cannot be reached.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise BloomsegError("--workers and --scheduler need Dask: "
                            "pip install 'bloomseg[distributed]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as e:
            raise BloomsegError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        with client:
            yield client
        return
    WORKERS.check("workers", workers)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def segment_files_on_cluster(client, spec: SegmenterSpec, paths: list[Path], out_dir: str | Path,
                             options: OutputOptions = OutputOptions(), overwrite: bool = False,
                             progress: bool = True, threads: int | None = None,
                             resume: bool = False, classifier=None) -> list[dict]:
    """:func:`bloomseg.outputs.run.segment_files` with one Dask task per image.

    Args:
        client: a ``distributed.Client`` (see :func:`connect`).
        spec: the model, loaded by each worker once.
        paths: image files, readable by the workers at these paths.
        out_dir: output folder on storage the workers share with this process.
        options: what to write per image.
        overwrite: replace outputs that exist (else those images are skipped).
        resume: keep the images an earlier run finished, redo the rest.
        progress: a progress bar that follows the tasks.
        threads: torch threads per worker (default: the worker's cores over its task
            slots).
        classifier: the model's cell classifier, to judge the run's classes against the
            labs it learnt (default: loaded here where cells were named).

    Returns:
        One summary row per input, in input order, as ``segment_files`` gives.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker
    from tqdm import tqdm

    options.check()
    out_dir = Path(out_dir)
    name, spec = spec.model, spec.absolute()
    rows: list[dict | None] = [None] * len(paths)
    futures = {}
    run = uuid.uuid4().hex[:8]
    for i, path in enumerate(paths):
        rows[i] = planned_row(out_dir, path, options, overwrite, resume)
        if rows[i] is not None:
            continue
        future = client.submit(_run_task, spec, str(Path(path).resolve()), str(out_dir.resolve()),
                               options, threads, key=f"bloomseg-{run}-{i}", pure=False)
        futures[future] = i
    for future in tqdm(as_completed(futures), total=len(futures), desc="segmenting",
                       unit="image", disable=not progress):
        i = futures[future]
        try:
            row = future.result()
        except KilledWorker as e:
            row = {"status": f"failed: {paths[i]}: the workers running it died ({e}); "
                             "out of memory?"}
        except Exception as e:  # one image's trouble must not end the batch
            row = {"status": f"failed: {paths[i]}: {type(e).__name__}: {e}"}
        rows[i] = dict.fromkeys(SUMMARY_COLUMNS, "") | row | {"image": str(paths[i])}
        if progress and rows[i]["status"] != "ok":
            tqdm.write(f"skipped {rows[i]['status'].removeprefix('failed: ')}")
        future.release()
    # the run is judged against the labs the classifier learnt: its profiles are read here
    if classifier is None and options.cells and any(r.get("red_profile") is not None
                                                    for r in rows):
        classifier = spec.load().classifier
    finish_run(out_dir, rows, options, name, classifier)
    return rows
