"""Screening: structures (files, archives, stores, objects) -> band gaps, streamed in order.

Data flow (memory bounded by ``chunk_size * (2 * workers + 1)`` structures in flight)::

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
from typing import TYPE_CHECKING, Any

import numpy as np

from fastgap.ensemble import GAP_TARGET, METAL_TARGET, Bundle, combine, load_bundle, select_members
from fastgap.features import FeaturizedBatch, FeaturizerConfig
from fastgap.structures import ELEMENTS, Reject

if TYPE_CHECKING:
    from typing_extensions import Self

REJECTS_HEADER = ("id", "source", "reason")
START_METHODS = ("auto", "fork", "spawn")


@dataclass
class PredictConfig:
    """Options of `predict_to_file` / `predict`; CLI flags map onto these fields.

    Attributes:
        model: "default" (the bundled ensemble), a bundle or run directory, or a checkpoint.
        workers: parse + featurize worker processes (0 = in the calling process).
        batch_size: structures per model forward pass.
        chunk_size: inputs per worker task (and per inference chunk).
        tta: average each order-dependent model (LSTM pooling) over the distinct axis-swap
            atom orders of a structure; order-free models ("attention"/"mean" pooling) give
            the same numbers for every order and read only one (`fastgap.inference`).
        precision: "fp32" (the model card's numbers) or "bf16" (CPU autocast, faster, with
            the accuracy change reported in benchmarks/RESULTS.md).
        members: use only the first ``members`` band-gap regressors and as many classifiers
            (0 = all); 1 is the fast mode (no ``band_gap_std_eV``); fewer regressors than
            all report an uncalibrated std.
        calibrated: scale ``band_gap_std_eV`` by the card's calibration factor (False = the
            raw ensemble spread).
        backend: neighbour-list backend of the featurizer ("auto", "cpp", "numba", ...).
        threads: torch threads for inference (0 = leave torch's setting).
        start_method: how worker processes start: "fork" (Linux; milliseconds, the parent
            has already imported torch and loaded the bundle), "spawn" (a fresh interpreter
            per worker: about 1.5-3 s of imports) or "auto" (fork where the platform offers
            it, else spawn). The workers are started before any input is opened.
        policy: `fastgap.readers.ReadPolicy` (None = its defaults).
        progress: show a progress bar.
    """

    model: Any = "default"
    workers: int = 2
    batch_size: int = 256
    chunk_size: int = 1000
    tta: bool = True
    precision: str = "fp32"
    members: int = 0
    calibrated: bool = True
    backend: str = "auto"
    threads: int = 0
    start_method: str = "auto"
    policy: Any = None
    progress: bool = True

    def __post_init__(self) -> None:
        from fastgap.inference import check_precision

        for name, low in (("workers", 0), ("batch_size", 1), ("chunk_size", 1), ("threads", 0),
                          ("members", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        check_precision(self.precision)
        if self.start_method not in START_METHODS:
            raise ValueError(f"start_method: expected one of {START_METHODS}, "
                             f"got {self.start_method!r}")

    def inference_options(self) -> dict[str, Any]:
        """Keyword arguments of `predict_featurized` / `predict_chunk`."""
        return {"tta": self.tta, "batch_size": self.batch_size, "precision": self.precision,
                "calibrated": self.calibrated}


@dataclass
class PredictSummary:
    """Counts of one run: ``predicted + rejected == inputs``."""

    inputs: int = 0
    predicted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    out: str = ""
    rejects: str = ""

    def __str__(self) -> str:
        rate = self.inputs / self.seconds if self.seconds > 0 else float("nan")
        return (
            f"inputs {self.inputs}: predicted {self.predicted}, rejected {self.rejected} "
            f"({self.seconds:.1f} s, {rate:.0f} structures/s)\n"
            f"predictions {self.out}\nrejects {self.rejects}"
        )


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


def trained_max_z(bundle: Bundle) -> int:
    """Largest atomic number every member was trained on (its ``max_z`` filter or embedding)."""
    limits = []
    for m in bundle.members:
        limit = m.meta.get("train_config", {}).get("max_z")
        embed = int(m.model.config.max_z)
        limits.append(min(int(limit), embed) if limit else embed)
    return min(limits)


def predict_featurized(bundle: Bundle, batch: FeaturizedBatch, *, tta: bool, batch_size: int,
                       precision: str = "fp32", calibrated: bool = True) -> dict[str, np.ndarray]:
    """Output columns (each (S,) float64) for every structure of ``batch``, in order.

    Every member reads the same dataset and the same collated batches
    (`fastgap.inference.predict_members`); ``calibrated`` applies ``bundle.std_scale``.
    """
    from fastgap.data import StructureDataset
    from fastgap.inference import predict_members

    n = batch.n_structures
    dataset = StructureDataset(batch)  # built once, shared by every member
    members = bundle.members
    outs = predict_members([m.model for m in members], dataset, tta=tta,
                           batch_size=batch_size, precision=precision)
    preds = {id(m): out for m, out in zip(members, outs)}

    def column(members: list[Any], target: str) -> np.ndarray | None:
        if not members:
            return None
        return np.stack([preds[id(m)][:, m.targets.index(target)] for m in members])  # (M, S)

    cols = combine(column(bundle.band_gap, GAP_TARGET), column(bundle.metal, METAL_TARGET), n,
                   std_scale=bundle.std_scale if calibrated else 1.0)
    others: dict[str, list[np.ndarray]] = {}
    for m in bundle.others:
        for j, target in enumerate(m.targets):
            others.setdefault(target, []).append(preds[id(m)][:, j])
    cols.update({t: np.mean(v, axis=0) for t, v in others.items()})
    return cols


def _untrained_elements(batch: FeaturizedBatch, max_z: int) -> tuple[np.ndarray, list[Reject]]:
    """(S,) bool rows a model can predict; structures with elements above ``max_z`` -> rejects."""
    zmax = np.zeros(batch.n_structures, dtype=np.int64)
    if batch.n_atoms:
        zmax = np.maximum.reduceat(batch.numbers.astype(np.int64), batch.atom_ptr[:-1])
    keep = zmax <= max_z
    rejects = [
        Reject(str(batch.ids[i]), str(batch.sources[i]),
               f"numbers: element {ELEMENTS[int(zmax[i]) - 1]} (Z={int(zmax[i])}) is outside "
               f"the model's training elements (Z <= {max_z})")
        for i in np.flatnonzero(~keep)
    ]
    return keep, rejects


@dataclass
class ChunkPrediction:
    """Predictions of one chunk of inputs (rows in input order) and its rejects."""

    ids: np.ndarray  # (S,) str
    sources: np.ndarray  # (S,) str
    columns: dict[str, np.ndarray]  # name -> (S,) float64
    rejects: list[Reject]
    n_inputs: int


def predict_chunk(bundle: Bundle, batch: FeaturizedBatch, rejects: list[Reject], n_inputs: int,
                  **options: Any) -> ChunkPrediction:
    """Predict every structure of ``batch`` the bundle was trained for; the rest are rejects.

    ``options`` are the keyword arguments of `predict_featurized` (``tta``, ``batch_size``,
    ``precision``, ``calibrated``).
    """
    keep, more = _untrained_elements(batch, trained_max_z(bundle))
    if not keep.all():
        batch = batch.select(np.flatnonzero(keep))
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


def _tasks(inputs: Sequence[Any], k: int, config: PredictConfig) -> Iterator[tuple[Any, tuple]]:
    """(function, arguments) per chunk of input, in input order; the bundle is added later."""
    from fastgap.featurize import chunked
    from fastgap.readers import iter_raw
    from fastgap.store import Store

    # processes are the parallelism: one k-NN thread each
    featurizer = FeaturizerConfig(k=k, backend=config.backend, num_threads=1)
    opts = config.inference_options()
    for kind, item in _segments(inputs):
        if kind == "store":
            store = Store.open(item)
            if store.featurizer.k != k:
                raise ValueError(f"inputs: store {str(item)!r} has k={store.featurizer.k} "
                                 f"neighbours, the model was trained with k={k}")
            for batch in store.iter_batches(config.chunk_size):
                yield _store_task, (batch, opts)
            continue
        for chunk in chunked(iter_raw(item), config.chunk_size):
            yield _raw_task, (chunk, config.policy, featurizer, opts)


# Worker-process state: the bundle, sent once per worker by the pool initializer.
_WORKER: dict[str, Any] = {}


def _init_worker(bundle: Bundle) -> None:
    import torch

    torch.set_num_threads(1)  # one process per core does the inference
    _WORKER["bundle"] = bundle


def _ready() -> bool:
    return True


def _in_worker(fn: Any, args: tuple) -> ChunkPrediction:
    return fn(_WORKER["bundle"], *args)


def chunk_predictions(
    inputs: Sequence[Any], bundle: Bundle, config: PredictConfig
) -> Iterator[ChunkPrediction]:
    """Per chunk, in input order: parse + featurize + every member, in ``config.workers``
    processes (each runs the whole chain on its chunks, so inference uses every core), or
    in this process when ``workers == 0``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, wait

    from fastgap.featurize import bounded_ordered_map

    tasks = _tasks(inputs, bundle.k, config)
    if config.workers == 0:
        for fn, args in tasks:
            yield fn(bundle, *args)
        return
    method = config.start_method
    if method == "auto":
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(config.workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(bundle,)) as pool:
        # start every worker now, before any input (zarr, archives) opens threads or files
        with warnings.catch_warnings():
            # Python >= 3.12 warns on fork when the parent has threads (torch's OpenMP pool
            # after in-process inference); workers run one torch thread and open no input
            # the parent holds, so the locks such threads may hold are never needed there.
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks",
                                    category=DeprecationWarning)
            wait([pool.submit(_ready) for _ in range(config.workers)])
        yield from bounded_ordered_map(lambda task: pool.submit(_in_worker, *task), tasks,
                                       2 * config.workers + 1)


def iter_predictions(
    inputs: Sequence[Any], bundle: Bundle, config: PredictConfig
) -> Iterator[tuple[Any, list[Reject], int]]:
    """(DataFrame of predicted rows, rejects, inputs consumed) per chunk, input order.

    A second input with an id already seen is rejected here, in the main process, so the
    rule holds across chunks and workers.
    """
    import pandas as pd

    from fastgap.readers import DuplicateIds

    seen = DuplicateIds()
    for chunk in chunk_predictions(inputs, bundle, config):
        keep = np.ones(len(chunk.ids), dtype=bool)
        rejects = list(chunk.rejects)
        for i, (id_, source) in enumerate(zip(chunk.ids, chunk.sources)):
            dup = seen.check(str(id_), str(source))
            if dup is not None:
                keep[i] = False
                rejects.append(dup)
        frame = {"id": chunk.ids[keep], **{c: v[keep] for c, v in chunk.columns.items()}}
        yield pd.DataFrame(frame), rejects, chunk.n_inputs


def output_columns(bundle: Bundle) -> list[str]:
    """The columns `iter_predictions` writes for ``bundle``, in order."""
    cols = ["id", "band_gap_eV", "p_metal"]
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
        model: "default", a bundle / run directory, a checkpoint path or a loaded `Bundle`.
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


class RowWriter:
    """Append DataFrame chunks to CSV or Parquet (by suffix); the file appears on success."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        if path.suffix.lower() not in (".csv", ".parquet"):
            raise ValueError(f"out: expected a .csv or .parquet path, got {str(path)!r}")
        self.path, self.columns = path, columns
        self.partial = path.with_name(path.name + ".partial")
        self._parquet = path.suffix.lower() == ".parquet"
        self._writer: Any = None
        self._rows = 0

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._parquet:
            self._writer = self.partial.open("w", newline="", encoding="utf-8")
            self._writer.write(",".join(self.columns) + "\n")
        return self

    def write(self, frame: Any) -> None:
        frame = frame[self.columns]
        if not self._parquet:
            frame.to_csv(self._writer, header=False, index=False, lineterminator="\n")
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.partial, table.schema)
        if len(frame) or self._rows == 0:
            self._writer.write_table(table)
        self._rows += len(frame)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None and self._parquet and self._writer is None:
            import pandas as pd

            empty = {c: pd.Series(dtype=object if c == "id" else float) for c in self.columns}
            self.write(pd.DataFrame(empty))
        if self._writer is not None:
            self._writer.close()
        if exc_type is None and self._writer is not None:
            self.partial.replace(self.path)


def default_rejects_path(out: str | Path) -> Path:
    """``preds.csv`` -> ``preds.rejects.csv`` (next to the output)."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(out.suffix) + ".rejects.csv")


def predict_to_file(
    inputs: Sequence[Any] | str | Path,
    out: str | Path,
    config: PredictConfig | None = None,
    rejects: str | Path | None = None,
) -> PredictSummary:
    """Stream predictions of ``inputs`` into ``out`` (CSV, or Parquet for ``.parquet``).

    The file appears at ``out`` only when the run completes (written to ``out.partial``
    first); rejects go to ``rejects`` (default `default_rejects_path`).
    """
    import torch
    from tqdm import tqdm

    config = config or PredictConfig()
    out = Path(out)
    rejects_path = Path(rejects) if rejects is not None else default_rejects_path(out)
    bundle = _bundle(config.model, config.members)
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    summary = PredictSummary(out=str(out), rejects=str(rejects_path))
    start = time.perf_counter()
    rejects_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with RowWriter(out, output_columns(bundle)) as writer, \
                rejects_path.open("w", newline="", encoding="utf-8") as fh, \
                tqdm(unit=" structures", disable=not config.progress or None) as bar:
            rej = csv.writer(fh, lineterminator="\n")
            rej.writerow(REJECTS_HEADER)
            for frame, rejected, n_inputs in iter_predictions(items, bundle, config):
                writer.write(frame)
                rej.writerows((r.id, r.source, " ".join(r.reason.split())) for r in rejected)
                summary.inputs += n_inputs
                summary.predicted += len(frame)
                summary.rejected += len(rejected)
                bar.update(n_inputs)
    finally:
        torch.set_num_threads(threads)
    summary.seconds = time.perf_counter() - start
    return summary
