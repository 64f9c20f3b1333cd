"""The feature store: a Zarr v3 group of sharded arrays, crash-safe appends, streaming reads.

Schema (``SCHEMA_VERSION`` 2); S structures, A atoms, k neighbours:

```
<store>/zarr.json          attrs: schema_version, fastgap_version, featurizer, created,
                                  updated, n_structures, n_atoms (the committed lengths)
<store>/ids                (S,)     str     structure ids, store order
<store>/atom_ptr           (S+1,)   int64   atom offsets (atom_ptr[0] = 0)
<store>/lattice            (S,3,3)  float32 Å
<store>/pbc                (S,3)    bool
<store>/sources            (S,)     str
<store>/properties/<name>  (S,)     float64 NaN where missing
<store>/numbers            (A,)     uint8
<store>/frac_coords        (A,3)    float32
<store>/nbr_numbers        (A,k)    uint8
<store>/nbr_distances      (A,k)    float32 Å
<store>/nbr_counts         (A,)     uint8
<store>/nbr_indices        (A,k)    int32   neighbour's local atom index, -1 = padding
```

Version history: schema 2 added ``nbr_indices`` (needed by models with ``rounds > 1``).
Schema 1 stores are still read (``FeaturizedBatch.nbr_indices`` is None) but not appended
to; re-featurize them to get the indices.

Crash safety: an append resizes and writes the data arrays first and only then raises the
committed lengths in the root attributes (one atomic file replace in zarr's LocalStore).
Readers never look past the committed lengths; a writer truncates anything past them before
its first append, so a ``kill -9`` at any moment leaves a store the next run repairs.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from fastgap._version import __version__
from fastgap.features import FeaturizedBatch, FeaturizerConfig

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)  # 1: no nbr_indices

# Chunks are the unit a reader decodes; shards are the unit on disk (one file each).
# Atom arrays: 2**15 atoms per chunk (~1,000 MP structures; nbr_distances 2.5 MB raw) so a
# training batch or a streamed slice decodes only a few chunks, and 2**19 atoms per shard
# (16 chunks, ~15-40 MB compressed) so a 10^6-structure store is a few hundred files
# rather than tens of thousands, and sequential reads are long contiguous file reads.
# Structure arrays are small per row: 2**14 rows per chunk, 2**17 per shard.
ATOM_CHUNK, ATOM_SHARD = 2**15, 2**19
STRUCT_CHUNK, STRUCT_SHARD = 2**14, 2**17
# `Store.iter_batches` reads whole batches covering at least this many atoms at once and
# hands out slices: zarr decodes whole chunks, so reading batch by batch decoded a chunk
# once per batch it touches (1,000-structure batches: 2.7x the time of this)
READ_WINDOW_ATOMS = 4 * ATOM_CHUNK
ATOM_FIELDS = (
    "numbers", "frac_coords", "nbr_numbers", "nbr_distances", "nbr_counts", "nbr_indices",
)  # fmt: skip
STRUCT_FIELDS = ("ids", "lattice", "pbc", "sources")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _array_specs(k: int) -> dict[str, tuple[tuple[int, ...], Any, str]]:
    """name -> (trailing shape, dtype, axis kind)."""
    return {
        "ids": ((), str, "s"),
        "lattice": ((3, 3), np.float32, "s"),
        "pbc": ((3,), bool, "s"),
        "sources": ((), str, "s"),
        "numbers": ((), np.uint8, "a"),
        "frac_coords": ((3,), np.float32, "a"),
        "nbr_numbers": ((k,), np.uint8, "a"),
        "nbr_distances": ((k,), np.float32, "a"),
        "nbr_counts": ((), np.uint8, "a"),
        "nbr_indices": ((k,), np.int32, "a"),
    }


def _create(group: zarr.Group, name: str, tail: tuple[int, ...], dtype: Any, kind: str,
            length: int = 0, fill_value: Any = None) -> zarr.Array:
    chunk, shard = (ATOM_CHUNK, ATOM_SHARD) if kind == "a" else (STRUCT_CHUNK, STRUCT_SHARD)
    return group.create_array(
        name, shape=(length, *tail), chunks=(chunk, *tail), shards=(shard, *tail),
        dtype=dtype, fill_value=fill_value,
    )  # fmt: skip


class Store:
    """A featurized store on disk. Open with `Store.open` (read) or `Store.create`/`open_append`.

    Only the committed prefix (``n_structures`` structures, ``n_atoms`` atoms) is visible.
    """

    def __init__(self, path: Path, group: zarr.Group, writable: bool) -> None:
        self.path = path
        self._group = group
        self._writable = writable
        self._ids: np.ndarray | None = None
        self._ptr: np.ndarray | None = None
        attrs = dict(group.attrs)
        self.featurizer = FeaturizerConfig(**attrs["featurizer"])
        self.n_structures = int(attrs["n_structures"])
        self.n_atoms = int(attrs["n_atoms"])
        self.schema_version = int(attrs["schema_version"])
        self.has_nbr_indices = self.schema_version >= 2

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open an existing store read-only; refuse other schema versions."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise FileNotFoundError(f"path: no fastgap store at {path} (no zarr.json)")
        group = zarr.open_group(str(path), mode="r")
        _check_schema(path, dict(group.attrs))
        return cls(path, group, writable=False)

    @classmethod
    def create(cls, path: str | Path, featurizer: FeaturizerConfig) -> Store:
        """Create an empty store at ``path`` (absent or an empty directory).

        The store is built in a hidden sibling directory and renamed into place, so a crash
        during creation never leaves a half-made store at ``path``.
        """
        path = Path(path)
        if (path / "zarr.json").exists():
            raise FileExistsError(f"path: a store already exists at {path}")
        if path.is_dir() and any(path.iterdir()):
            raise FileExistsError(f"path: {path} is a non-empty directory, not a fastgap store")
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.creating-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a crash during creation
        tmp = path.parent / f".{path.name}.creating-{os.getpid()}"
        group = zarr.open_group(str(tmp), mode="w")
        for name, (tail, dtype, kind) in _array_specs(featurizer.k).items():
            fill = -1 if name == "nbr_indices" else None  # -1: padding, as in FeaturizedBatch
            _create(group, name, tail, dtype, kind, fill_value=fill)
        _create(group, "atom_ptr", (), np.int64, "s", length=1, fill_value=0)
        group.create_group("properties")
        now = _now()
        group.attrs.update({
            "schema_version": SCHEMA_VERSION, "fastgap_version": __version__,
            "featurizer": featurizer.to_dict(), "created": now, "updated": now,
            "n_structures": 0, "n_atoms": 0,
        })  # fmt: skip
        os.replace(tmp, path)  # atomic; replaces an empty directory
        return cls(path, zarr.open_group(str(path), mode="r+"), writable=True)

    @classmethod
    def open_append(cls, path: str | Path, featurizer: FeaturizerConfig) -> Store:
        """Open (or create) a store for appending; repair anything past the committed length.

        Refuses a store with another schema version or another featurizer (k).
        """
        path = Path(path)
        if not (path / "zarr.json").exists():
            return cls.create(path, featurizer)
        group = zarr.open_group(str(path), mode="r+")
        attrs = dict(group.attrs)
        _check_schema(path, attrs)
        if attrs["schema_version"] != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version: the store at {path} has schema version "
                f"{attrs['schema_version']} (no nbr_indices); this fastgap ({__version__}) "
                f"appends only to version {SCHEMA_VERSION}; re-featurize into a new store"
            )
        stored = FeaturizerConfig(**attrs["featurizer"])
        if stored.identity() != featurizer.identity():
            raise ValueError(
                f"featurizer: the store at {path} was featurized with {stored.identity()}, "
                f"this run asks for {featurizer.identity()}; use a new store"
            )
        store = cls(path, group, writable=True)
        store._truncate_uncommitted()
        return store

    def _truncate_uncommitted(self) -> None:
        s, a = self.n_structures, self.n_atoms
        for name, arr in self._arrays():
            want = a if name in ATOM_FIELDS else s + (name == "atom_ptr")
            if arr.shape[0] != want:
                arr.resize((want, *arr.shape[1:]))

    def _arrays(self) -> Iterator[tuple[str, zarr.Array]]:
        for name in (*STRUCT_FIELDS, *self._atom_fields(), "atom_ptr"):
            yield name, self._group[name]
        for name, arr in self._group["properties"].arrays():
            yield f"properties/{name}", arr

    def _atom_fields(self) -> tuple[str, ...]:
        return ATOM_FIELDS if self.has_nbr_indices else ATOM_FIELDS[:-1]

    # -- reading ---------------------------------------------------------------------------

    @property
    def ids(self) -> np.ndarray:
        """(S,) object array of structure ids, store order (read once, cached)."""
        if self._ids is None:
            self._ids = np.asarray(self._group["ids"][: self.n_structures], dtype=object)
        return self._ids

    @property
    def pbc(self) -> np.ndarray:
        """(S, 3) bool periodicity of every committed structure, store order."""
        return np.asarray(self._group["pbc"][: self.n_structures], dtype=bool)

    @property
    def atom_ptr(self) -> np.ndarray:
        """(S+1,) int64 atom offsets of the committed structures."""
        if self._ptr is None:
            self._ptr = np.asarray(self._group["atom_ptr"][: self.n_structures + 1])
        return self._ptr

    @property
    def property_names(self) -> list[str]:
        return sorted(name for name, _ in self._group["properties"].arrays())

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    def load(self, indices: Sequence[int] | np.ndarray | None = None) -> FeaturizedBatch:
        """All committed structures, or those at ``indices`` (store positions, that order)."""
        if indices is None:
            return self._read_range(0, self.n_structures)
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= self.n_structures)):
            raise ValueError(f"indices: expected 1-D positions in [0, {self.n_structures})")
        if idx.size == 0:
            return FeaturizedBatch.empty(
                self.featurizer.k, self.property_names, with_indices=self.has_nbr_indices
            )
        # read the covering range once, then select; cheap for the clustered subsets
        # that splits and screens use, and never more than the whole store
        lo, hi = int(idx.min()), int(idx.max()) + 1
        return self._read_range(lo, hi).select(idx - lo)

    def iter_batches(self, batch_size: int = 4096, *, nbr_indices: bool = True,
                     properties: bool = True) -> Iterator[FeaturizedBatch]:
        """Stream the store in order, ``batch_size`` structures at a time.

        ``nbr_indices=False`` skips that array (``None`` in the batches), which only
        ``rounds > 1`` models read; ``properties=False`` skips the labels (empty
        ``properties``), which prediction does not read. Batches are views of a larger read
        (`READ_WINDOW_ATOMS`); a pickled batch carries only its own rows.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        n, ptr = self.n_structures, self.atom_ptr
        lo = 0
        while lo < n:
            hi = min(lo + batch_size, n)
            while hi < n and ptr[hi] - ptr[lo] < READ_WINDOW_ATOMS:
                hi = min(hi + batch_size, n)
            window = self._read_range(lo, hi, nbr_indices=nbr_indices, properties=properties)
            for start in range(0, hi - lo, batch_size):
                yield window.slice(start, min(start + batch_size, hi - lo))
            lo = hi

    def _read_range(self, lo: int, hi: int, *, nbr_indices: bool = True,
                    properties: bool = True) -> FeaturizedBatch:
        g, ptr = self._group, self.atom_ptr
        a0, a1 = int(ptr[lo]), int(ptr[hi])
        props = g["properties"]
        nbr_indices = nbr_indices and self.has_nbr_indices
        return FeaturizedBatch(
            ids=self.ids[lo:hi].copy(),
            atom_ptr=(ptr[lo : hi + 1] - a0).astype(np.int64),
            lattice=g["lattice"][lo:hi],
            pbc=g["pbc"][lo:hi],
            numbers=g["numbers"][a0:a1],
            frac_coords=g["frac_coords"][a0:a1],
            nbr_numbers=g["nbr_numbers"][a0:a1],
            nbr_distances=g["nbr_distances"][a0:a1],
            nbr_counts=g["nbr_counts"][a0:a1],
            properties={name: props[name][lo:hi] for name in self.property_names}
            if properties else {},
            sources=np.asarray(g["sources"][lo:hi], dtype=object),
            nbr_indices=g["nbr_indices"][a0:a1] if nbr_indices else None,
        )

    # -- writing ---------------------------------------------------------------------------

    def append(self, batch: FeaturizedBatch) -> None:
        """Append ``batch`` after the committed structures, then commit (crash-safe)."""
        if not self._writable:
            raise ValueError(f"store: {self.path} was opened read-only; use Store.open_append")
        batch.validate()
        if batch.k != self.featurizer.k:
            raise ValueError(f"batch: expected k={self.featurizer.k}, got k={batch.k}")
        if batch.nbr_indices is None:
            raise ValueError(
                f"batch: expected nbr_indices (store schema {SCHEMA_VERSION}), got None; "
                "featurize with this fastgap version"
            )
        if batch.n_structures == 0:
            return
        g = self._group
        s0, a0 = self.n_structures, self.n_atoms
        s1, a1 = s0 + batch.n_structures, a0 + batch.n_atoms
        for name in STRUCT_FIELDS + ATOM_FIELDS:
            lo, hi = (a0, a1) if name in ATOM_FIELDS else (s0, s1)
            _write(g[name], lo, hi, getattr(batch, name))
        _write(g["atom_ptr"], s0 + 1, s1 + 1, batch.atom_ptr[1:] + a0)
        props = g["properties"]
        existing = {name for name, _ in props.arrays()}
        for name in batch.properties.keys() - existing:
            # a property first seen now: earlier structures read as NaN via the fill value
            _create(props, name, (), np.float64, "s", length=s0, fill_value=np.nan)
        for name in existing | batch.properties.keys():
            values = batch.properties.get(name, np.full(batch.n_structures, np.nan))
            _write(props[name], s0, s1, values)
        # the commit point: until this attribute write lands, the new rows do not exist
        g.attrs.update({"n_structures": s1, "n_atoms": a1, "updated": _now()})
        self.n_structures, self.n_atoms = s1, a1
        if self._ids is not None:
            self._ids = np.concatenate([self._ids, batch.ids])
        self._ptr = None


def _write(arr: zarr.Array, lo: int, hi: int, values: np.ndarray) -> None:
    if arr.shape[0] != lo:
        arr.resize((lo, *arr.shape[1:]))  # drop uncommitted rows left by a crash
    arr.resize((hi, *arr.shape[1:]))
    arr[lo:hi] = values


def _check_schema(path: Path, attrs: dict[str, Any]) -> None:
    version = attrs.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise ValueError(
            f"schema_version: the store at {path} has schema version {version!r}, this "
            f"fastgap ({__version__}) reads versions {READABLE_SCHEMAS}; re-featurize it"
        )
    for key in ("featurizer", "n_structures", "n_atoms"):
        if key not in attrs:
            raise ValueError(f"store: {path} lacks root attribute {key!r}; not a fastgap store")
