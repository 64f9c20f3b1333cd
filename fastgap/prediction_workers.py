"""Worker processes of `fastgap.screening`: each runs whole chunks (parse, featurize, every
member), results come back in input order.

Workers start before any input is opened (fork: milliseconds, the parent has already
imported torch and loaded the bundle; spawn: a fresh interpreter each), run one torch
thread, keep a small oneDNN primitive cache (`PRIMITIVE_CACHE`) and hand
freed heap memory back once it has grown by `TRIM_SLACK` (`release_memory`), so memory
stays flat over millions of structures (benchmarks/RESULTS.md, "Screening at scale").
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

START_METHODS = ("auto", "fork", "spawn")
PRIMITIVE_CACHE = 64  # oneDNN primitives a worker keeps (its default, 1024, grew memory)

# Worker-process state: the bundle, sent once per worker by the pool initializer.
_WORKER: dict[str, Any] = {}
_LIBC: list[Any] = []  # glibc, loaded on first use ([None] where there is none)
_TRIMMED: dict[str, int] = {}  # "floor": resident bytes right after the last trim
TRIM_SLACK = 64 << 20  # bytes of growth past that floor before the next trim


def release_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``; a no-op elsewhere) once
    this process's resident memory has grown `TRIM_SLACK` past its level after the last
    release.

    Called after every chunk: the tensors of a chunk differ in size from those of the
    last, and without trimming the freed pieces fragment the heap, so a worker's RSS creeps
    up over millions of structures (benchmarks/RESULTS.md, "Screening at scale"). Trimming
    after every chunk instead cost the workers a sixth of their time in page faults (the
    next chunk touches fresh pages again); where the resident size cannot be read, it trims
    every time.
    """
    if not _LIBC:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
        try:
            lib = ctypes.CDLL(name) if name else None
            _LIBC.append(lib if lib is not None and hasattr(lib, "malloc_trim") else None)
        except OSError:
            _LIBC.append(None)
    if _LIBC[0] is None:
        return
    rss = resident_bytes()
    if rss is not None and rss < _TRIMMED.get("floor", 0) + TRIM_SLACK:
        return
    _LIBC[0].malloc_trim(0)
    _TRIMMED["floor"] = resident_bytes() or 0


def resident_bytes() -> int | None:
    """This process's resident memory in bytes (Linux ``/proc/self/statm``), else None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _init_worker(bundle: Any) -> None:
    # oneDNN keeps one compiled primitive per input shape. Inference pads LSTM row chunks
    # to a few shapes (fastgap.lstm_rows.INFERENCE_ROW_QUANTUM), which a small cache keeps;
    # the other shapes (packed sequences, bf16 Linears) vary with every batch, and a
    # bounded cache evicts them, so memory stays flat (read when the first primitive is
    # made, which is after this in a fresh or forked worker; a value the user set is kept)
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(PRIMITIVE_CACHE))
    import torch

    torch.set_num_threads(1)  # one process per core does the inference
    _WORKER["bundle"] = bundle


def _ready() -> bool:
    return True


def _in_worker(fn: Any, args: tuple) -> Any:
    try:
        return fn(_WORKER["bundle"], *args)
    finally:
        release_memory()


def run_tasks(tasks: Iterable[tuple[Any, tuple]], bundle: Any, workers: int,
              start_method: str = "auto") -> Iterator[Any]:
    """``fn(bundle, *args)`` for every ``(fn, args)`` of ``tasks``, results in task order.

    ``workers == 0`` runs them in this process; otherwise in a pool of ``workers``
    processes (``start_method``: one of `START_METHODS`) holding ``bundle``, with at most
    ``2 * workers + 1`` tasks in flight.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, wait

    from fastgap.featurize import bounded_ordered_map

    if workers == 0:
        for fn, args in tasks:
            out = fn(bundle, *args)
            release_memory()
            yield out
        return
    method = start_method
    if method == "auto":
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(bundle,)) as pool:
        # start every worker now, before any input (zarr, archives) opens threads or files
        with warnings.catch_warnings():
            # Python >= 3.12 warns on fork when the parent has threads (torch's OpenMP pool
            # after in-process inference); workers run one torch thread and open no input
            # the parent holds, so the locks such threads may hold are never needed there.
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks",
                                    category=DeprecationWarning)
            wait([pool.submit(_ready) for _ in range(workers)])
        yield from bounded_ordered_map(lambda task: pool.submit(_in_worker, *task), tasks,
                                       2 * workers + 1)
