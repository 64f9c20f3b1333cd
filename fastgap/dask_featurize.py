"""`featurize` on a ``dask.distributed`` cluster: the same store, rejects and accounting.

Layout choice: partitions (chunks of raw input items) are parsed and featurized on the
cluster's workers; each returns its `ChunkResult` (compact NumPy arrays) to the client,
which commits them in input order through the same `Committer` as the process-pool path.
Every partition therefore lands in its own contiguous, disjoint region of the one store,
with no cross-worker writes to shared shard files (sharded Zarr files are rewritten whole,
so concurrent writers to one shard would race) and no staging directory to clean up after
a crash. Resumption, deduplication and the rejects CSV behave exactly as in `featurize`.
The client bounds the partitions in flight, so memory stays bounded on both sides.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fastgap.featurize import (
    ChunkResult,
    Committer,
    FeaturizeConfig,
    FeaturizeSummary,
    bounded_ordered_map,
    open_run,
    process_chunk,
    run_ordered,
)


def featurize_dask(
    inputs: Sequence[str | Path] | str | Path,
    out: str | Path,
    config: FeaturizeConfig | None = None,
    *,
    address: str | None = None,
    processes: bool = True,
) -> FeaturizeSummary:
    """Featurize ``inputs`` into the store at ``out`` on a Dask cluster.

    Args:
        inputs: as for `fastgap.featurize.featurize`.
        out: store directory (created, or appended to and repaired).
        config: ``workers`` sizes the LocalCluster (at least 1); ignored with ``address``.
        address: a running scheduler's address; None starts a LocalCluster.
        processes: LocalCluster with worker processes (False: threads, for small jobs).
    """
    from distributed import Client, LocalCluster

    from fastgap.readers import iter_raw_chunks

    config = config or FeaturizeConfig()
    if address is not None and not isinstance(address, str):
        raise TypeError(f"address: expected a scheduler address str or None, got {address!r}")
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    committer = open_run(out, config)
    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=max(config.workers, 1), threads_per_worker=1,
                               processes=processes, dashboard_address=None)  # fmt: skip
    try:
        with Client(cluster if cluster is not None else address) as client:
            chunks = iter_raw_chunks(list(inputs), config.chunk_size)
            results = _cluster_results(client, chunks, config, committer)
            return run_ordered(committer, results, config.progress)
    finally:
        if cluster is not None:
            cluster.close()


def _cluster_results(
    client: Any, chunks: Iterator[list[Any]], config: FeaturizeConfig, committer: Committer
) -> Iterator[ChunkResult]:
    # the skip sets go to every worker once, not with every partition
    done_ids, done_rejects = client.scatter(
        [committer.done_ids, committer.done_rejects], broadcast=True
    )
    in_flight = config.max_in_flight or 2 * max(len(client.nthreads()), 1) + 1

    def submit(chunk: list[Any]) -> Any:
        return client.submit(process_chunk, chunk, config.policy, config.featurizer,
                             done_ids, done_rejects, pure=False)  # fmt: skip

    yield from bounded_ordered_map(submit, chunks, in_flight)
