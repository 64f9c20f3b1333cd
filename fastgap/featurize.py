"""Bulk featurization: inputs -> parallel parse + neighbour features -> one store, resumably.

Data flow (memory bounded by ``chunk_size * max_in_flight`` items plus one flush buffer):

```
main: iter_raw(inputs) -> chunks of RawItems --> workers: parse_raw + featurize_structures
main: <-- ChunkResults in input order -> dedupe / skip -> rejects.csv + Store.append
```

Every input record ends in exactly one of: written, rejected (a line in the rejects CSV),
or skipped (already in the store, or already in the rejects CSV from an earlier run). So a
run killed at any moment and started again with the same command completes the store with
no duplicates and no losses; ``written + rejected + skipped == inputs`` for every run.
"""

from __future__ import annotations

import csv
import itertools
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastgap.features import FeaturizedBatch, FeaturizerConfig, featurize_batch
from fastgap.readers import DuplicateIds

if TYPE_CHECKING:  # zarr stays out of the worker processes, which never write
    from fastgap.store import Store

REJECTS_NAME = "rejects.csv"
REJECTS_HEADER = ("id", "source", "reason")
#: Default atoms buffered per store commit: one atom shard of `fastgap.store` (2**19).
FLUSH_ATOMS = 2**19


@dataclass
class FeaturizeConfig:
    """Options of `featurize`; CLI flags map onto these fields.

    Attributes:
        featurizer: the neighbour-feature settings saved into the store.
        workers: worker processes (0 = featurize in the calling process).
        chunk_size: raw input items per worker task.
        max_in_flight: tasks submitted but not yet written (0 = ``2 * workers + 1``).
        flush_atoms: atoms buffered before a store commit; whole shards are cheapest.
        rejects: rejects CSV path (None = ``<store>/rejects.csv``).
        policy: reader policy passed to ``fastgap.readers.parse_raw`` (None = its default).
        progress: show a tqdm progress bar (on a terminal).
    """

    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    workers: int = 2
    chunk_size: int = 1000
    max_in_flight: int = 0
    flush_atoms: int = FLUSH_ATOMS
    rejects: str | Path | None = None
    policy: Any = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name, low in (("workers", 0), ("chunk_size", 1), ("max_in_flight", 0),
                          ("flush_atoms", 1)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        if not isinstance(self.featurizer, FeaturizerConfig):
            raise TypeError(f"featurizer: expected FeaturizerConfig, got {self.featurizer!r}")

    @property
    def in_flight(self) -> int:
        return self.max_in_flight or 2 * self.workers + 1


@dataclass
class FeaturizeSummary:
    """Counts of one run; ``written + rejected + skipped == inputs`` always holds."""

    inputs: int = 0
    written: int = 0
    rejected: int = 0
    skipped: int = 0
    store: str = ""
    rejects: str = ""
    n_structures: int = 0

    def __str__(self) -> str:
        return (
            f"inputs {self.inputs}: written {self.written}, rejected {self.rejected}, "
            f"skipped (already done) {self.skipped}\n"
            f"store {self.store}: {self.n_structures} structures\nrejects {self.rejects}"
        )


@dataclass
class ChunkResult:
    """What a worker returns for one chunk of raw items.

    ``records`` has one ``(kind, id, source, reason)`` per input record, input order, with
    kind ``"ok"`` (the next row of ``batch``), ``"reject"`` or ``"present"`` (not featurized
    because the store or the rejects CSV already holds it).
    """

    batch: FeaturizedBatch
    records: list[tuple[str, str, str, str]]


def process_chunk(
    items: Sequence[Any],
    policy: Any,
    featurizer: FeaturizerConfig,
    done_ids: set[str] | frozenset[str],
    done_rejects: set[tuple[str, str]] | frozenset[tuple[str, str]],
) -> ChunkResult:
    """Parse and featurize one chunk (runs in workers; pure apart from its inputs)."""
    from fastgap.readers import parse_batch

    parsed = parse_batch(items, policy)
    records = parsed.records
    todo: list[int] = []  # batch rows to featurize
    where: list[int] = []  # their record positions
    row = 0
    for pos, (kind, id_, source, _) in enumerate(records):
        if kind != "ok":
            continue
        if id_ in done_ids or (id_, source) in done_rejects:
            records[pos] = ("present", id_, source, "")
        else:
            todo.append(row)
            where.append(pos)
        row += 1
    structures = parsed.batch if len(todo) == row else parsed.batch.select(todo)
    batch, failed = featurize_batch(structures, featurizer)
    for r, reason in failed:
        _, id_, source, _ = records[where[r]]
        records[where[r]] = ("reject", id_, source, f"featurization failed: {reason}")
    return ChunkResult(batch, records)


# Worker-process state, set once per worker by the pool initializer so that the (possibly
# million-entry) skip sets are pickled once per worker rather than once per task.
_WORKER: dict[str, Any] = {}


def _init_worker(done_ids: frozenset[str], done_rejects: frozenset[tuple[str, str]]) -> None:
    _WORKER["done"] = (done_ids, done_rejects)


def _process_in_worker(items: list[Any], policy: Any, featurizer: FeaturizerConfig) -> ChunkResult:
    return process_chunk(items, policy, featurizer, *_WORKER["done"])


def chunked(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(iterable)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def read_rejects(path: Path) -> set[tuple[str, str]]:
    """(id, source) pairs in a rejects CSV; a line cut short by a crash is dropped."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])  # repair the torn last line
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if rows and tuple(rows[0]) == REJECTS_HEADER:
        rows = rows[1:]
    return {(row[0], row[1]) for row in rows if len(row) >= 2}


class Committer:
    """Main-process side: dedupes and classifies records in input order, writes the store
    (buffered to ``flush_atoms``) and the rejects CSV, and keeps the summary."""

    def __init__(self, store: Store, rejects_path: Path, flush_atoms: int) -> None:
        self.store = store
        self.done_rejects = frozenset(read_rejects(rejects_path))
        self.done_ids = frozenset(store.ids.tolist())
        new = not rejects_path.exists() or rejects_path.stat().st_size == 0
        rejects_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = rejects_path.open("a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file, lineterminator="\n")
        if new:
            self._csv.writerow(REJECTS_HEADER)
        self._ids = DuplicateIds()
        # store writes (compression, file I/O) overlap with receiving the next chunks;
        # at most one write is in flight, so appends stay sequential and in order
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="fastgap-store")
        self._pending: Future[None] | None = None
        self._buffer: list[FeaturizedBatch] = []
        self._buffered_atoms = 0
        self.flush_atoms = flush_atoms
        self.summary = FeaturizeSummary(store=str(store.path), rejects=str(rejects_path))

    def add(self, result: ChunkResult) -> int:
        """Account for one chunk (input order); returns the number of records in it."""
        keep, row = np.zeros(result.batch.n_structures, dtype=bool), 0
        for kind, id_, source, reason in result.records:
            seen = bool(id_) and id_ in self._ids
            duplicate = self._ids.check(id_, source) if id_ else None
            if (id_, source) in self.done_rejects:
                self.summary.skipped += 1
            elif duplicate is not None:
                self._reject(id_, source, duplicate.reason)
            elif seen or kind == "present":  # the same input given twice, or done earlier
                self.summary.skipped += 1
            elif kind == "reject":
                self._reject(id_, source, reason)
            else:
                keep[row] = True
                self.summary.written += 1
            row += kind == "ok"
        self.summary.inputs += len(result.records)
        self._file.flush()
        if keep.any():
            batch = result.batch if keep.all() else result.batch.select(keep)
            self._buffer.append(batch)
            self._buffered_atoms += batch.n_atoms
            if self._buffered_atoms >= self.flush_atoms:
                self.flush()
        return len(result.records)

    def _reject(self, id_: str, source: str, reason: str) -> None:
        # one CSV record per line, so that a torn last line is all a crash can leave
        self._csv.writerow((id_, source, " ".join(reason.split())))
        self.summary.rejected += 1

    def flush(self) -> None:
        """Hand the buffered rows to the writer thread (after the previous write lands)."""
        if self._buffer:
            buffer = self._buffer
            batch = buffer[0] if len(buffer) == 1 else FeaturizedBatch.concat(buffer)
            self._wait()
            self._pending = self._writer.submit(self.store.append, batch)
        self._buffer, self._buffered_atoms = [], 0

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()  # re-raises a failed write here, in the main thread

    def abort(self) -> None:
        """Stop without flushing: a write in progress completes (or fails) first."""
        try:
            self._wait()
        except Exception:  # noqa: BLE001 -- already failing; the next run repairs the store
            pass
        self._writer.shutdown(wait=True)
        if not self._file.closed:
            self._file.close()

    def close(self) -> FeaturizeSummary:
        self.flush()
        self._wait()
        self.abort()
        self.summary.n_structures = self.store.n_structures
        return self.summary


def open_run(out: str | Path, config: FeaturizeConfig) -> Committer:
    """Open (or create) the store, repair it, and load what earlier runs already did."""
    from fastgap.store import Store

    out = Path(out)
    rejects = Path(config.rejects) if config.rejects is not None else out / REJECTS_NAME
    store = Store.open_append(out, config.featurizer)
    return Committer(store, rejects, config.flush_atoms)


def run_ordered(
    committer: Committer, results: Iterator[ChunkResult], progress: bool
) -> FeaturizeSummary:
    """Feed ordered chunk results into the committer with a progress bar."""
    from tqdm import tqdm

    try:
        with tqdm(unit=" structures", disable=not progress or None, smoothing=0.1) as bar:
            for result in results:
                bar.update(committer.add(result))
        return committer.close()
    except BaseException:
        committer.abort()  # buffered rows are lost on purpose: the next run redoes them
        raise


def _pool_results(
    chunks: Iterator[list[Any]], config: FeaturizeConfig, committer: Committer
) -> Iterator[ChunkResult]:
    if config.workers == 0:
        for chunk in chunks:
            yield process_chunk(chunk, config.policy, config.featurizer,
                                committer.done_ids, committer.done_rejects)  # fmt: skip
        return
    ctx = multiprocessing.get_context("spawn")
    init = (committer.done_ids, committer.done_rejects)
    # the processes are the parallelism: one k-NN thread each unless asked otherwise
    featurizer = replace(config.featurizer, num_threads=config.featurizer.num_threads or 1)
    with ProcessPoolExecutor(config.workers, mp_context=ctx, initializer=_init_worker,
                             initargs=init) as pool:  # fmt: skip
        yield from bounded_ordered_map(
            lambda chunk: pool.submit(_process_in_worker, chunk, config.policy, featurizer),
            chunks, config.in_flight,
        )


def bounded_ordered_map(
    submit: Callable[[Any], Any], items: Iterator[Any], in_flight: int
) -> Iterator[Any]:
    """Results of ``submit(item).result()`` in item order, at most ``in_flight`` pending."""
    pending: deque[Any] = deque()
    for item in items:
        pending.append(submit(item))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def featurize(
    inputs: Sequence[str | Path] | str | Path, out: str | Path, config: FeaturizeConfig | None = None
) -> FeaturizeSummary:
    """Featurize every structure in ``inputs`` into the store at ``out`` (created or appended).

    Inputs are anything `fastgap.readers.iter_raw` reads (files, directories, archives).
    Returns the run's `FeaturizeSummary`; bad records go to the rejects CSV with a reason.
    """
    from fastgap.readers import check_paths, iter_raw_chunks

    config = config or FeaturizeConfig()
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    check_paths(i for i in inputs if isinstance(i, (str, Path)))  # before the store exists
    committer = open_run(out, config)
    chunks = iter_raw_chunks(list(inputs), config.chunk_size)
    return run_ordered(committer, _pool_results(chunks, config, committer), config.progress)
