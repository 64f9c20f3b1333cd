"""Screening: structures (files, archives, stores, objects) -> band gaps, streamed in order.

Data flow (at most ``chunk_size * (2 * workers + 1)`` structures in flight; workers keep
a small oneDNN primitive cache and trim the heap after each chunk, see
`fastgap.prediction_workers`)::

    iter_raw(inputs) -> chunks ----------+
    Store.iter_batches() -> chunks ------+--> workers (fork or spawn; one torch thread each),
        per chunk: parse + featurize (raw inputs), one dataset, one collate per batch read
        by every member (`fastgap.inference`), combination rule
    main: chunk predictions in input order -> CSV / Parquet rows + rejects CSV

Members whose pooling is order-free read only the identity atom order; order-dependent
ones are averaged over the axis-swap orders when ``tta`` is on. The processes are the
parallelism: each runs the whole chain on its chunks, so inference uses every core.

No labels are read. Every input ends as exactly one output row (input order, its id) or one
rejects row (id, source, reason). How the regressors and the metal classifiers combine into
``band_gap_eV``, ``p_metal`` and ``band_gap_std_eV`` is stated once, in `fastgap.ensemble`.
"""

from __future__ import annotations

import csv
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastgap.applicability import (
    trained_elements,
    trained_max_z,
    untrained_elements,
    untrained_periodicity,
)
from fastgap.ensemble import GAP_TARGET, METAL_TARGET, Bundle, combine, load_bundle, select_members
from fastgap.features import FeaturizedBatch, FeaturizerConfig
from fastgap.predict_config import PredictConfig, PredictSummary
from fastgap.prediction_files import (
    Progress,
    RowWriter,
    check_out_path,
    default_rejects_path,
    resume_progress,
    run_identity,
    run_state_path,
    save_progress,
)
from fastgap.prediction_workers import run_tasks
from fastgap.structures import Reject

REJECTS_HEADER = ("id", "source", "reason")


def _is_store(obj: Any) -> bool:
    return isinstance(obj, (str, Path)) and (Path(obj) / "zarr.json").is_file()


def _segments(inputs: Sequence[Any]) -> Iterator[tuple[str, Any]]:
    """Consecutive raw inputs grouped together; each feature store on its own."""
    raw: list[Any] = []
    for obj in inputs:
        if _is_store(obj):
            if raw:
                yield "raw", raw
                raw = []
            yield "store", obj
        else:
            raw.append(obj)
    if raw:
        yield "raw", raw


def predict_featurized(bundle: Bundle, batch: FeaturizedBatch, *, tta: bool, batch_size: int,
                       precision: str = "fp32", calibrated: bool = True) -> dict[str, np.ndarray]:
    """Output columns (each (S,) float64) for every structure of ``batch``, in order.

    Every member reads the same dataset and the same collated batches
    (`fastgap.inference.predict_members`); ``calibrated`` applies ``bundle.std_scale``.
    """
    from fastgap.data import StructureDataset
    from fastgap.inference import angle_bins_of, order_free, predict_members

    n = batch.n_structures
    members = bundle.members
    # built once, shared by every member; round-2 rows only if some member reads them, the
    # axis-swap orders only if some member's pooling reads the atoms in order
    dataset = StructureDataset(batch,
                               neighbour_rows=bundle.reads_nbr_indices,
                               orders=not all(order_free(m.model) for m in members),
                               angle_bins=angle_bins_of([m.model for m in members]))
    outs = predict_members([m.model for m in members], dataset, tta=tta,
                           batch_size=batch_size, precision=precision)
    preds = {id(m): out for m, out in zip(members, outs)}

    def column(members: list[Any], target: str) -> np.ndarray | None:
        if not members:
            return None
        return np.stack([preds[id(m)][:, m.targets.index(target)] for m in members])  # (M, S)

    cols: dict[str, np.ndarray] = {}
    if bundle.band_gap or bundle.metal:  # a model of other properties has no band-gap columns
        cols = combine(column(bundle.band_gap, GAP_TARGET), column(bundle.metal, METAL_TARGET),
                       n, std_scale=bundle.std_scale if calibrated else 1.0)
    others: dict[str, list[np.ndarray]] = {}
    for m in bundle.others:
        for j, target in enumerate(m.targets):
            others.setdefault(target, []).append(preds[id(m)][:, j])
    cols.update({t: np.mean(v, axis=0) for t, v in others.items()})
    return cols


@dataclass
class ChunkPrediction:
    """Predictions of one chunk of inputs (rows in input order) and its rejects."""

    ids: np.ndarray  # (S,) str
    sources: np.ndarray  # (S,) str
    columns: dict[str, np.ndarray]  # name -> (S,) float64
    rejects: list[Reject]
    n_inputs: int
    replay: bool = False  # rows an earlier run wrote: ids and sources only, no columns


def predict_chunk(bundle: Bundle, batch: FeaturizedBatch, rejects: list[Reject], n_inputs: int,
                  replay: bool = False, **options: Any) -> ChunkPrediction:
    """Predict every structure of ``batch`` the bundle was trained for; the rest are rejects.

    ``options`` are the keyword arguments of `predict_featurized` (``tta``, ``batch_size``,
    ``precision``, ``calibrated``) and ``check_periodicity`` (reject structures of a
    periodicity kind no member was trained on; default True). ``replay`` (a chunk a
    resumed run's first run wrote): only the ids and sources of the rows, nothing predicted.
    """
    check_periodicity = options.pop("check_periodicity", True)
    keep, more = untrained_elements(batch, trained_max_z(bundle), trained_elements(bundle))
    if check_periodicity:
        keep, other = untrained_periodicity(batch, bundle, keep)
        more += other
    if not keep.all():
        batch = batch.select(np.flatnonzero(keep))
    if replay:
        return ChunkPrediction(batch.ids.astype(str), batch.sources.astype(str), {}, [],
                               n_inputs, replay=True)
    if batch.n_structures:
        cols = predict_featurized(bundle, batch, **options)
    else:
        cols = {c: np.zeros(0) for c in output_columns(bundle)[1:]}
    return ChunkPrediction(batch.ids.astype(str), batch.sources.astype(str), cols,
                           rejects + more, n_inputs)


def _raw_task(bundle: Bundle, items: list[Any], policy: Any, featurizer: FeaturizerConfig,
              options: dict[str, Any]) -> ChunkPrediction:
    """Parse, featurize and predict one chunk of raw inputs."""
    from fastgap.featurize import process_chunk

    result = process_chunk(items, policy, featurizer, frozenset(), frozenset())
    rejects = [Reject(i, s, r) for kind, i, s, r in result.records if kind == "reject"]
    return predict_chunk(bundle, result.batch, rejects, len(result.records), **options)


def _store_task(bundle: Bundle, batch: FeaturizedBatch, options: dict[str, Any]) -> ChunkPrediction:
    return predict_chunk(bundle, batch, [], batch.n_structures, **options)


def _tasks(inputs: Sequence[Any], k: int, config: PredictConfig, replay: int = 0,
           nbr_indices: bool = True) -> Iterator[tuple[Any, tuple]]:
    """(function, arguments) per chunk of input, in input order; the bundle is added later.
    The first ``replay`` chunks are replayed (`predict_chunk`), not predicted; stores are
    read without ``nbr_indices`` unless ``nbr_indices`` (a ``rounds > 1`` member)."""
    from fastgap.featurize import chunked
    from fastgap.readers import iter_raw
    from fastgap.store import Store

    # processes are the parallelism: one k-NN thread each
    featurizer = FeaturizerConfig(k=k, backend=config.backend, num_threads=1)
    options = config.inference_options()
    n_tasks = 0

    def opts() -> dict[str, Any]:
        nonlocal n_tasks
        n_tasks += 1
        return {**options, "replay": True} if n_tasks <= replay else options

    for kind, item in _segments(inputs):
        if kind == "store":
            store = Store.open(item)
            if store.featurizer.k != k:
                raise ValueError(f"inputs: store {str(item)!r} has k={store.featurizer.k} "
                                 f"neighbours, the model was trained with k={k}")
            for batch in store.iter_batches(config.chunk_size, nbr_indices=nbr_indices,
                                            properties=False):
                yield _store_task, (batch, opts())
            continue
        for chunk in chunked(iter_raw(item), config.chunk_size):
            yield _raw_task, (chunk, config.policy, featurizer, opts())


def chunk_predictions(
    inputs: Sequence[Any], bundle: Bundle, config: PredictConfig, replay: int = 0
) -> Iterator[ChunkPrediction]:
    """Per chunk, in input order: parse + featurize + every member, in ``config.workers``
    processes (each runs the whole chain on its chunks, so inference uses every core), or
    in this process when ``workers == 0``. The first ``replay`` chunks are not predicted."""
    tasks = _tasks(inputs, bundle.k, config, replay, nbr_indices=bundle.reads_nbr_indices)
    yield from run_tasks(tasks, bundle, config.workers, config.start_method)


def iter_predictions(
    inputs: Sequence[Any], bundle: Bundle, config: PredictConfig, replay: int = 0
) -> Iterator[tuple[Any, list[Reject], ChunkPrediction]]:
    """(DataFrame of predicted rows, rejects, the chunk) per chunk, input order.

    A second input with an id already seen is rejected here, in the main process, so the
    rule holds across chunks and workers. The first ``replay`` chunks (written by the first
    run of a resumed job) give no rows and no rejects; their ids only enter the duplicate
    check, so the later chunks are judged exactly as in a straight run.
    """
    import pandas as pd

    from fastgap.readers import DuplicateIds

    seen = DuplicateIds()
    for chunk in chunk_predictions(inputs, bundle, config, replay):
        keep = np.ones(len(chunk.ids), dtype=bool)
        rejects = list(chunk.rejects)
        for i, (id_, source) in enumerate(zip(chunk.ids, chunk.sources)):
            dup = seen.check(str(id_), str(source))
            if dup is not None:
                keep[i] = False
                rejects.append(dup)
        if chunk.replay:  # the first run wrote these rows and rejects
            yield pd.DataFrame({"id": chunk.ids[:0]}), [], chunk
            continue
        frame = {"id": chunk.ids[keep], **{c: v[keep] for c, v in chunk.columns.items()}}
        yield pd.DataFrame(frame), rejects, chunk


def output_columns(bundle: Bundle) -> list[str]:
    """The columns `iter_predictions` writes for ``bundle``, in order."""
    cols = ["id"]
    if bundle.band_gap or bundle.metal:
        cols += ["band_gap_eV", "p_metal"]
        if len(bundle.band_gap) >= 2:
            cols.append("band_gap_std_eV")
        cols.append("band_gap_regressor_eV")
    cols += list(dict.fromkeys(t for m in bundle.others for t in m.targets))
    return cols


def _as_inputs(structures: Any) -> list[Any]:
    if isinstance(structures, (list, tuple)):
        return list(structures)
    if isinstance(structures, (str, Path)) or not isinstance(structures, Iterable):
        return [structures]
    if type(structures).__module__.split(".")[0] in ("pymatgen", "ase", "fastgap"):
        return [structures]  # a pymatgen Structure or ASE Atoms iterates over its sites
    return list(structures)


def _bundle(model: Any, members: int = 0) -> Bundle:
    return select_members(model if isinstance(model, Bundle) else load_bundle(model), members)


def predict(structures: Any, model: Any = "default", config: PredictConfig | None = None) -> Any:
    """Band gaps of ``structures`` as a pandas DataFrame, one row per accepted input, in order.

    Args:
        structures: a pymatgen ``Structure``/``Molecule``, ASE ``Atoms``, fastgap
            ``Structure``, path (file, directory, archive, JSON-lines, feature store) or a
            list of them. No labels are needed.
        model: "default", "fast", "qm9", a bundle / run directory, a checkpoint path or a
            loaded `Bundle`.
        config: pipeline options (``config.model`` is ignored; ``model`` decides).

    Returns:
        DataFrame with ``id``, ``band_gap_eV`` (eV, combination rule in
        `fastgap.ensemble`), ``p_metal``, ``band_gap_std_eV`` (ensembles, eV) and
        ``band_gap_regressor_eV``. Rejected inputs are listed in ``df.attrs["rejects"]``
        (dicts with id, source, reason) and announced by a ``UserWarning``.
    """
    import pandas as pd

    config = config or PredictConfig(workers=0, progress=False)
    bundle = _bundle(model, config.members)
    frames, rejects = [], []
    for frame, rej, _ in iter_predictions(_as_inputs(structures), bundle, config):
        frames.append(frame)
        rejects += rej
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {c: pd.Series(dtype=object if c == "id" else float) for c in output_columns(bundle)})
    df.attrs["rejects"] = [{"id": r.id, "source": r.source, "reason": r.reason} for r in rejects]
    if rejects:
        warnings.warn(f"{len(rejects)} input(s) rejected, first: {rejects[0].source}: "
                      f"{rejects[0].reason}; see df.attrs['rejects']", UserWarning, stacklevel=2)
    return df


def predict_to_file(
    inputs: Sequence[Any] | str | Path,
    out: str | Path,
    config: PredictConfig | None = None,
    rejects: str | Path | None = None,
) -> PredictSummary:
    """Stream predictions of ``inputs`` into ``out`` (CSV, or Parquet for ``.parquet``).

    The file appears at ``out`` only when the run completes (written to ``out.partial``
    first, with the model and settings in ``out.partial.json``); rejects go to ``rejects``
    (default `default_rejects_path`).

    ``config.resume`` continues a run that stopped (CSV output, the same inputs, model and
    options; checked against ``out.partial.json``, member files by sha256): the rows and
    rejects of the chunks the first run committed are kept, those chunks are read again
    only for their ids (so that the duplicate-id rule sees them), and prediction goes on
    from the next chunk. The finished files are byte for byte those of a straight run.
    Without ``out.partial`` the run starts afresh.
    """
    import torch
    from tqdm import tqdm

    from fastgap.readers import check_paths

    config = config or PredictConfig()
    out = Path(out)
    check_out_path(out)
    rejects_path = Path(rejects) if rejects is not None else default_rejects_path(out)
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    # a missing path or a directory with nothing to read fails before any file is written
    check_paths(i for i in items if isinstance(i, (str, Path)) and not _is_store(i))
    bundle = _bundle(config.model, config.members)
    columns = output_columns(bundle)
    parquet = out.suffix.lower() == ".parquet"
    if config.resume and parquet:
        raise ValueError("resume: needs CSV output (a Parquet file is unreadable until it is "
                         "closed)")
    if config.resume and not all(isinstance(i, (str, Path)) for i in items):
        raise ValueError("resume: needs paths as inputs (objects cannot be matched between "
                         "runs)")
    identity = None if parquet else run_identity(bundle, config, columns, items)
    progress = resume_progress(out, rejects_path, identity) if config.resume else None
    append = progress is not None
    progress = progress or Progress()
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    summary = PredictSummary(out=str(out), rejects=str(rejects_path))
    start = time.perf_counter()
    rejects_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with RowWriter(out, columns, append=append) as writer, \
                rejects_path.open("a" if append else "w", newline="", encoding="utf-8") as fh, \
                tqdm(unit=" structures", disable=not config.progress or None) as bar:
            rej = csv.writer(fh, lineterminator="\n")

            def commit() -> None:  # what a resumed run keeps: the files as they are now
                if identity is not None:
                    fh.flush()
                    progress.rows_bytes, progress.rejects_bytes = writer.tell(), fh.tell()
                    save_progress(out, identity, progress)

            if not append:
                rej.writerow(REJECTS_HEADER)
                commit()  # resumable from the first byte
            replay = progress.chunks
            for frame, rejected, chunk in iter_predictions(items, bundle, config, replay):
                summary.inputs += chunk.n_inputs
                bar.update(chunk.n_inputs)
                if chunk.replay:
                    summary.skipped += chunk.n_inputs
                    continue
                writer.write(frame)
                rej.writerows((r.id, r.source, " ".join(r.reason.split())) for r in rejected)
                summary.predicted += len(frame)
                summary.rejected += len(rejected)
                progress.chunks += 1
                progress.inputs += chunk.n_inputs
                commit()
        run_state_path(out).unlink(missing_ok=True)  # complete: nothing left to resume
    finally:
        torch.set_num_threads(threads)
    summary.seconds = time.perf_counter() - start
    return summary
