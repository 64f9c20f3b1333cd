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
    def empty(cls, k: int, property_names: Sequence[str] = ()) -> FeaturizedBatch:
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
        return self

    def select(self, idx: Sequence[int] | np.ndarray) -> FeaturizedBatch:
        """The structures at positions ``idx`` (int indices or a boolean mask), in that order."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (self.n_structures,):
                raise ValueError(f"idx: boolean mask must have shape ({self.n_structures},)")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        counts = np.diff(self.atom_ptr)[idx]
        starts = self.atom_ptr[idx]
        # atom index of every selected atom: start of its structure + position inside it
        ptr = np.zeros(idx.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        atoms = np.repeat(starts - ptr[:-1], counts) + np.arange(ptr[-1], dtype=np.int64)
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
        )

    @staticmethod
    def concat(batches: Sequence[FeaturizedBatch]) -> FeaturizedBatch:
        """One batch from several with the same k; properties are the union (NaN-filled)."""
        if not batches:
            raise ValueError("batches: expected at least one FeaturizedBatch, got none")
        ks = {b.k for b in batches}
        if len(ks) != 1:
            raise ValueError(f"batches: expected one k, got {sorted(ks)}")
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
        )  # fmt: skip


def _wrap_frac(frac: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """(A, 3) float64 -> float32 wrapped into [0, 1) along periodic axes (per-atom pbc rows)."""
    wrapped = np.where(pbc, frac - np.floor(frac), frac).astype(np.float32)
    # 1 - 1e-9 rounds to 1.0 in float32; by periodicity that point is 0.
    wrapped[(wrapped >= 1.0) & pbc] = 0.0
    return wrapped


def _neighbors(structures: Sequence[Structure], config: FeaturizerConfig) -> Any:
    from fastgap.neighbors import neighbor_lists_batch

    ptr = np.zeros(len(structures) + 1, dtype=np.int64)
    np.cumsum([s.n_atoms for s in structures], out=ptr[1:])
    return neighbor_lists_batch(
        np.stack([np.asarray(s.lattice, dtype=np.float64) for s in structures]),
        np.concatenate([np.asarray(s.frac_coords, dtype=np.float64) for s in structures]),
        np.concatenate([np.asarray(s.numbers, dtype=np.int64) for s in structures]),
        ptr,
        k=config.k,
        pbc=np.array([s.pbc for s in structures], dtype=bool).reshape(-1, 3),
        backend=config.backend,
        num_threads=config.num_threads,
    )


def _featurize_ok(structures: Sequence[Structure], config: FeaturizerConfig) -> list[Any]:
    """Neighbour lists for ``structures``; a failing structure is isolated by bisection.

    Returns one entry per structure: ``(start, stop, NeighborList)`` slices into a shared
    result, or a ``str`` reason for a structure that failed. Bisection costs O(log S) extra
    calls per bad structure instead of S single-structure calls.
    """
    try:
        nl = _neighbors(structures, config)
    except (ValueError, TypeError) as exc:
        if len(structures) == 1:
            return [f"{type(exc).__name__}: {exc}"]
        half = len(structures) // 2
        return _featurize_ok(structures[:half], config) + _featurize_ok(structures[half:], config)
    out, start = [], 0
    for s in structures:
        out.append((start, start + s.n_atoms, nl))
        start += s.n_atoms
    return out


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
    if not structures:
        return FeaturizedBatch.empty(config.k), []
    results = _featurize_ok(structures, config)
    good = [i for i, r in enumerate(results) if not isinstance(r, str)]
    rejects = [
        Reject(structures[i].id, structures[i].source, f"featurization failed: {r}")
        for i, r in enumerate(results)
        if isinstance(r, str)
    ]
    return _assemble([structures[i] for i in good], [results[i] for i in good], config.k), rejects


def _assemble(structures: list[Structure], parts: list[Any], k: int) -> FeaturizedBatch:
    """Concatenate per-structure neighbour-list slices into one `FeaturizedBatch`."""
    if not structures:
        return FeaturizedBatch.empty(k)
    ptr = np.zeros(len(structures) + 1, dtype=np.int64)
    np.cumsum([s.n_atoms for s in structures], out=ptr[1:])
    # consecutive slices of the same result collapse into one; usually the whole batch
    runs: list[list[Any]] = []
    for start, stop, nl in parts:
        if runs and runs[-1][2] is nl and runs[-1][1] == start:
            runs[-1][1] = stop
        else:
            runs.append([start, stop, nl])

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(nl, name)[a:b] for a, b, nl in runs])

    distances = cat("distances")
    counts = cat("counts")
    valid = np.arange(k)[None, :] < counts[:, None]  # (A, k)
    pbc = np.array([s.pbc for s in structures], dtype=bool).reshape(-1, 3)
    frac = np.concatenate([np.asarray(s.frac_coords, dtype=np.float64) for s in structures])
    names = list(dict.fromkeys(n for s in structures for n in s.properties))
    properties = {
        n: np.array([_as_float(s.properties.get(n)) for s in structures], dtype=np.float64)
        for n in names
    }
    return FeaturizedBatch(
        ids=np.array([s.id for s in structures], dtype=object),
        atom_ptr=ptr,
        lattice=np.stack([np.asarray(s.lattice) for s in structures]).astype(np.float32),
        pbc=pbc,
        numbers=np.concatenate([np.asarray(s.numbers) for s in structures]).astype(np.uint8),
        frac_coords=_wrap_frac(frac, np.repeat(pbc, np.diff(ptr), axis=0)),
        nbr_numbers=np.where(valid, cat("numbers"), 0).astype(np.uint8),
        nbr_distances=np.where(valid, distances, 0.0).astype(np.float32),
        nbr_counts=counts.astype(np.uint8),
        properties=properties,
        sources=np.array([s.source for s in structures], dtype=object),
    )


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
