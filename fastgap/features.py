"""Structures -> neighbour features: `FeaturizerConfig`, `FeaturizedBatch`, `featurize_structures`.

The model reads, for every atom, its own atomic number followed by the atomic numbers and
distances of its k nearest neighbours in the order fixed by the neighbour-list contract
(DEVELOPERS.md). This module turns `Structure` records into that compact, padded form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fastgap.structure_batch import StructureBatch
from fastgap.structures import Reject, Structure

BACKENDS = ("auto", "cpp", "numba", "reference")


@dataclass
class FeaturizerConfig:
    """How neighbour features are computed; saved into every store and checkpoint.

    Attributes:
        k: neighbours per atom (the design's 20-entry list is the centre + 19).
        backend: neighbour-list backend, one of ``BACKENDS``.
        num_threads: threads of the compiled backend (0 = all cores).
    """

    k: int = 19
    backend: str = "auto"
    num_threads: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= 255:
            raise ValueError(f"k: expected an int in 1..255 (stored as uint8), got {self.k!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.num_threads, int) or self.num_threads < 0:
            raise ValueError(f"num_threads: expected an int >= 0, got {self.num_threads!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that change the features (backend and threads do not: one contract)."""
        return {"k": self.k}


def row_ranges(ptr: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``ptr[i]:ptr[i + 1]`` of every ``i`` in ``idx`` (int64), concatenated (R,) int64,
    and the offsets of each one's first row in that concatenation (len(idx) + 1,) int64."""
    starts, counts = ptr[idx], ptr[idx + 1] - ptr[idx]
    offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    # row of every selected entry: start of its range + position inside it
    rows = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1], dtype=np.int64)
    return rows, offsets


@dataclass(eq=False)
class FeaturizedBatch:
    """S structures with A atoms in total, k neighbours per atom (see DEVELOPERS.md).

    Attributes:
        ids: (S,) object (str). atom_ptr: (S+1,) int64 atom offsets.
        lattice: (S, 3, 3) float32, Å. pbc: (S, 3) bool.
        numbers: (A,) uint8. frac_coords: (A, 3) float32, wrapped into [0, 1) on periodic axes.
        nbr_numbers: (A, k) uint8, 0 = padding. nbr_distances: (A, k) float32, Å, 0 = padding.
        nbr_counts: (A,) uint8 valid neighbours.
        properties: name -> (S,) float64, NaN where missing. sources: (S,) object (str).
        nbr_indices: (A, k) int32 index of each neighbour inside its structure (local atom
            index, 0..n_atoms-1), -1 = padding; None for data featurized before it existed
            (store schema 1). Needed only by models with ``rounds > 1``.
    """

    ids: np.ndarray
    atom_ptr: np.ndarray
    lattice: np.ndarray
    pbc: np.ndarray
    numbers: np.ndarray
    frac_coords: np.ndarray
    nbr_numbers: np.ndarray
    nbr_distances: np.ndarray
    nbr_counts: np.ndarray
    properties: dict[str, np.ndarray] = field(default_factory=dict)
    sources: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    nbr_indices: np.ndarray | None = None

    @property
    def n_structures(self) -> int:
        return int(self.ids.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def k(self) -> int:
        return int(self.nbr_numbers.shape[1])

    @classmethod
    def empty(
        cls, k: int, property_names: Sequence[str] = (), *, with_indices: bool = True
    ) -> FeaturizedBatch:
        """A batch of zero structures with the right dtypes and trailing shapes."""
        return cls(
            ids=np.zeros(0, dtype=object),
            atom_ptr=np.zeros(1, dtype=np.int64),
            lattice=np.zeros((0, 3, 3), dtype=np.float32),
            pbc=np.zeros((0, 3), dtype=bool),
            numbers=np.zeros(0, dtype=np.uint8),
            frac_coords=np.zeros((0, 3), dtype=np.float32),
            nbr_numbers=np.zeros((0, k), dtype=np.uint8),
            nbr_distances=np.zeros((0, k), dtype=np.float32),
            nbr_counts=np.zeros(0, dtype=np.uint8),
            properties={name: np.zeros(0, dtype=np.float64) for name in property_names},
            sources=np.zeros(0, dtype=object),
            nbr_indices=np.zeros((0, k), dtype=np.int32) if with_indices else None,
        )

    def validate(self) -> FeaturizedBatch:
        """Check shapes, dtypes and offsets; raise ValueError naming the field. Returns self."""
        s, a, k = self.n_structures, self.n_atoms, self.nbr_numbers.shape[-1]
        expected = {
            "ids": ((s,), np.dtype(object)),
            "atom_ptr": ((s + 1,), np.dtype(np.int64)),
            "lattice": ((s, 3, 3), np.dtype(np.float32)),
            "pbc": ((s, 3), np.dtype(bool)),
            "numbers": ((a,), np.dtype(np.uint8)),
            "frac_coords": ((a, 3), np.dtype(np.float32)),
            "nbr_numbers": ((a, k), np.dtype(np.uint8)),
            "nbr_distances": ((a, k), np.dtype(np.float32)),
            "nbr_counts": ((a,), np.dtype(np.uint8)),
            "sources": ((s,), np.dtype(object)),
        }
        for name, (shape, dtype) in expected.items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.shape != shape or value.dtype != dtype:
                got = (value.shape, value.dtype) if isinstance(value, np.ndarray) else type(value)
                raise ValueError(f"{name}: expected shape {shape} dtype {dtype}, got {got}")
        for name, value in self.properties.items():
            if not isinstance(value, np.ndarray) or value.shape != (s,) or value.dtype != np.float64:
                raise ValueError(f"properties[{name!r}]: expected shape ({s},) float64")
        ptr = self.atom_ptr
        if ptr[0] != 0 or ptr[-1] != a or np.any(np.diff(ptr) < 1):
            raise ValueError(f"atom_ptr: expected 0, strictly increasing, ending at {a} atoms")
        if np.any(self.nbr_counts > k):
            raise ValueError(f"nbr_counts: expected values <= k={k}")
        if self.nbr_indices is not None:
            self._validate_indices()
        return self

    def _validate_indices(self) -> None:
        idx, k = self.nbr_indices, self.nbr_numbers.shape[-1]
        shape = (self.n_atoms, k)
        if not isinstance(idx, np.ndarray) or idx.shape != shape or idx.dtype != np.int32:
            got = (idx.shape, idx.dtype) if isinstance(idx, np.ndarray) else type(idx)
            raise ValueError(
                f"nbr_indices: expected shape {(self.n_atoms, k)} dtype int32 or None, got {got}"
            )
        valid = np.arange(k)[None, :] < self.nbr_counts[:, None]  # (A, k)
        size = np.repeat(np.diff(self.atom_ptr), np.diff(self.atom_ptr))[:, None]  # (A, 1)
        if np.any(valid & ((idx < 0) | (idx >= size))) or np.any(~valid & (idx != -1)):
            raise ValueError(
                "nbr_indices: expected local atom indices in [0, n_atoms) for the first "
                "nbr_counts entries of each row and -1 after them"
            )

    def select(self, idx: Sequence[int] | np.ndarray) -> FeaturizedBatch:
        """The structures at positions ``idx`` (int indices or a boolean mask), in that order."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (self.n_structures,):
                raise ValueError(f"idx: boolean mask must have shape ({self.n_structures},)")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        atoms, ptr = row_ranges(self.atom_ptr, idx)
        return FeaturizedBatch(
            ids=self.ids[idx],
            atom_ptr=ptr,
            lattice=self.lattice[idx],
            pbc=self.pbc[idx],
            numbers=self.numbers[atoms],
            frac_coords=self.frac_coords[atoms],
            nbr_numbers=self.nbr_numbers[atoms],
            nbr_distances=self.nbr_distances[atoms],
            nbr_counts=self.nbr_counts[atoms],
            properties={name: value[idx] for name, value in self.properties.items()},
            sources=self.sources[idx],
            nbr_indices=None if self.nbr_indices is None else self.nbr_indices[atoms],
        )

    def slice(self, lo: int, hi: int) -> FeaturizedBatch:
        """Structures ``lo:hi`` as views of this batch's arrays (no copy)."""
        if not 0 <= lo <= hi <= self.n_structures:
            raise ValueError(f"slice: expected 0 <= lo <= hi <= {self.n_structures}, "
                             f"got {lo}, {hi}")
        a0, a1 = int(self.atom_ptr[lo]), int(self.atom_ptr[hi])
        return FeaturizedBatch(
            ids=self.ids[lo:hi],
            atom_ptr=self.atom_ptr[lo:hi + 1] - a0,
            lattice=self.lattice[lo:hi],
            pbc=self.pbc[lo:hi],
            numbers=self.numbers[a0:a1],
            frac_coords=self.frac_coords[a0:a1],
            nbr_numbers=self.nbr_numbers[a0:a1],
            nbr_distances=self.nbr_distances[a0:a1],
            nbr_counts=self.nbr_counts[a0:a1],
            properties={name: value[lo:hi] for name, value in self.properties.items()},
            sources=self.sources[lo:hi],
            nbr_indices=None if self.nbr_indices is None else self.nbr_indices[a0:a1],
        )

    @staticmethod
    def concat(batches: Sequence[FeaturizedBatch]) -> FeaturizedBatch:
        """One batch from several with the same k; properties are the union (NaN-filled)."""
        if not batches:
            raise ValueError("batches: expected at least one FeaturizedBatch, got none")
        ks = {b.k for b in batches}
        if len(ks) != 1:
            raise ValueError(f"batches: expected one k, got {sorted(ks)}")
        has_indices = {b.nbr_indices is not None for b in batches}
        if len(has_indices) != 1:
            raise ValueError(
                "batches: expected all or none to carry nbr_indices, got a mix "
                "(data featurized before and after store schema 2)"
            )
        names = list(dict.fromkeys(n for b in batches for n in b.properties))
        sizes = [np.diff(b.atom_ptr) for b in batches]
        ptr = np.zeros(sum(b.n_structures for b in batches) + 1, dtype=np.int64)
        np.cumsum(np.concatenate(sizes), out=ptr[1:])

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(b, name) for b in batches])

        properties = {
            n: np.concatenate(
                [b.properties.get(n, np.full(b.n_structures, np.nan)) for b in batches]
            )
            for n in names
        }
        return FeaturizedBatch(
            ids=cat("ids"), atom_ptr=ptr, lattice=cat("lattice"), pbc=cat("pbc"),
            numbers=cat("numbers"), frac_coords=cat("frac_coords"),
            nbr_numbers=cat("nbr_numbers"), nbr_distances=cat("nbr_distances"),
            nbr_counts=cat("nbr_counts"), properties=properties, sources=cat("sources"),
            nbr_indices=cat("nbr_indices") if has_indices == {True} else None,
        )  # fmt: skip


def _wrap_frac(frac: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """(A, 3) float64 -> float32 wrapped into [0, 1) along periodic axes (per-atom pbc rows)."""
    wrapped = np.where(pbc, frac - np.floor(frac), frac).astype(np.float32)
    # 1 - 1e-9 rounds to 1.0 in float32; by periodicity that point is 0.
    wrapped[(wrapped >= 1.0) & pbc] = 0.0
    return wrapped


def _neighbors(batch: StructureBatch, lo: int, hi: int, config: FeaturizerConfig) -> Any:
    """Neighbour lists of structures ``lo:hi`` of ``batch`` (one batched call)."""
    from fastgap.neighbors import neighbor_lists_batch

    ptr = batch.atom_ptr
    a0, a1 = int(ptr[lo]), int(ptr[hi])
    return neighbor_lists_batch(
        batch.lattices[lo:hi], batch.frac_coords[a0:a1], batch.numbers[a0:a1],
        ptr[lo : hi + 1] - a0, k=config.k, pbc=batch.pbc[lo:hi], backend=config.backend,
        num_threads=config.num_threads,
    )  # fmt: skip


def _featurize_ranges(
    batch: StructureBatch, lo: int, hi: int, config: FeaturizerConfig
) -> tuple[list[tuple[int, int, Any]], list[tuple[int, str]]]:
    """Neighbour lists of structures ``lo:hi``; a failing structure is isolated by bisection.

    Returns ``(lo, hi, NeighborList)`` for the ranges that succeeded and ``(row, reason)``
    for the structures that failed. Bisection costs O(log S) extra calls per bad structure
    instead of S single-structure calls.
    """
    try:
        return [(lo, hi, _neighbors(batch, lo, hi, config))], []
    except (ValueError, TypeError) as exc:
        if hi - lo == 1:
            return [], [(lo, f"{type(exc).__name__}: {exc}")]
    mid = (lo + hi) // 2
    good1, bad1 = _featurize_ranges(batch, lo, mid, config)
    good2, bad2 = _featurize_ranges(batch, mid, hi, config)
    return good1 + good2, bad1 + bad2


def featurize_batch(
    batch: StructureBatch, config: FeaturizerConfig | None = None
) -> tuple[FeaturizedBatch, list[tuple[int, str]]]:
    """Featurize a `StructureBatch` with one batched neighbour-list call (bisection on failure).

    Returns the batch of the structures that succeeded (input order) and ``(row, reason)``
    for every structure that failed; every row is in exactly one of the two.
    """
    config = config or FeaturizerConfig()
    if not isinstance(config, FeaturizerConfig):
        raise TypeError(f"config: expected FeaturizerConfig, got {type(config).__name__}")
    if batch.n_structures == 0:
        return FeaturizedBatch.empty(config.k), []
    ranges, failed = _featurize_ranges(batch, 0, batch.n_structures, config)
    if failed:
        keep = np.ones(batch.n_structures, dtype=bool)
        keep[[row for row, _ in failed]] = False
        batch = batch.select(np.flatnonzero(keep))
    if not ranges:
        return FeaturizedBatch.empty(config.k), failed

    def cat(name: str) -> np.ndarray:
        if len(ranges) == 1:
            return getattr(ranges[0][2], name)
        return np.concatenate([getattr(nl, name) for _, _, nl in ranges])

    nbr = (cat("numbers"), cat("distances"), cat("counts"), cat("indices"))
    return _assemble(batch, *nbr, config.k), failed


def featurize_structures(
    structures: Sequence[Structure], config: FeaturizerConfig | None = None
) -> tuple[FeaturizedBatch, list[Reject]]:
    """Featurize ``structures`` with one batched neighbour-list call (bisection on failure).

    Returns the batch of the structures that succeeded (input order) and a `Reject` with
    the reason for every structure that failed; every input is in exactly one of the two.
    """
    config = config or FeaturizerConfig()
    if not isinstance(config, FeaturizerConfig):
        raise TypeError(f"config: expected FeaturizerConfig, got {type(config).__name__}")
    structures = list(structures)
    batch, failed = featurize_batch(StructureBatch.from_structures(structures), config)
    rejects = [
        Reject(structures[row].id, structures[row].source, f"featurization failed: {reason}")
        for row, reason in failed
    ]
    return batch, rejects


def _assemble(batch: StructureBatch, nbr_numbers: np.ndarray, distances: np.ndarray,
              counts: np.ndarray, indices: np.ndarray, k: int) -> FeaturizedBatch:  # fmt: skip
    """The `FeaturizedBatch` of ``batch`` from its (A, k) neighbour arrays."""
    valid = np.arange(k)[None, :] < counts[:, None]  # (A, k)
    ptr = batch.atom_ptr
    names = list(dict.fromkeys(n for p in batch.properties for n in p))
    ids = np.empty(batch.n_structures, dtype=object)
    ids[:] = batch.ids
    sources = np.empty(batch.n_structures, dtype=object)
    sources[:] = batch.sources
    return FeaturizedBatch(
        ids=ids,
        atom_ptr=ptr.astype(np.int64, copy=True),
        lattice=batch.lattices.astype(np.float32),
        pbc=batch.pbc.astype(bool, copy=True),
        numbers=batch.numbers.astype(np.uint8),
        frac_coords=_wrap_frac(batch.frac_coords, np.repeat(batch.pbc, np.diff(ptr), axis=0)),
        nbr_numbers=np.where(valid, nbr_numbers, 0).astype(np.uint8),
        nbr_distances=np.where(valid, distances, 0.0).astype(np.float32),
        nbr_counts=counts.astype(np.uint8),
        properties={n: _property_column(batch.properties, n) for n in names},
        sources=sources,
        nbr_indices=np.where(valid, indices, -1).astype(np.int32),
    )


def _property_column(properties: list[dict[str, Any]], name: str) -> np.ndarray:
    """(S,) float64 values of ``name`` (NaN where missing or not a number)."""
    values = [p.get(name) for p in properties]
    try:
        column = np.array(values, dtype=np.float64)  # None -> NaN
        if column.shape == (len(values),):
            return column
    except (TypeError, ValueError):
        pass
    return np.array([as_float(v) for v in values], dtype=np.float64)


def as_float(value: Any) -> float:
    """A plain float: NaN when ``value`` is None or not a number (units are dropped)."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
