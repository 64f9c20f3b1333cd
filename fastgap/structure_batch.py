"""Many structures as flat arrays (`StructureBatch`), and the vectorised validity screen.

Bulk parsing (`fastgap.readers`) builds one batch per chunk of inputs; featurization
(`fastgap.features`) computes the neighbour lists of a whole batch in one call.
`batch_suspects` finds the rows that may fail `Structure.validate` with the same arithmetic,
so only those are checked one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fastgap.structures import DUPLICATE_GRID, SINGULAR_TOL, Structure


@dataclass(eq=False)
class StructureBatch:
    """S structures with A atoms as flat arrays: what bulk parsing hands to featurization.

    Attributes:
        ids: S structure ids. sources: S source strings.
        lattices: (S, 3, 3) float64, Å. frac_coords: (A, 3) float64 (not necessarily wrapped).
        numbers: (A,) int64 atomic numbers 1..118.
        atom_ptr: (S+1,) int64 offsets; structure s owns atoms ``atom_ptr[s]:atom_ptr[s+1]``.
        pbc: (S, 3) bool. properties: S dicts name -> float.

    Every row satisfies what `Structure.validate` checks; build batches with
    `StructureBatch.from_structures` or through the readers, which validate.
    """

    ids: list[str]
    sources: list[str]
    lattices: np.ndarray
    frac_coords: np.ndarray
    numbers: np.ndarray
    atom_ptr: np.ndarray
    pbc: np.ndarray
    properties: list[dict[str, float]]

    @property
    def n_structures(self) -> int:
        return len(self.ids)

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @classmethod
    def from_structures(cls, structures: Sequence[Structure]) -> StructureBatch:
        """Pack `Structure` records (validated when they were built) into one batch."""
        ptr = np.zeros(len(structures) + 1, dtype=np.int64)
        np.cumsum([s.n_atoms for s in structures], out=ptr[1:])
        return cls(
            ids=[s.id for s in structures],
            sources=[s.source for s in structures],
            lattices=np.array([s.lattice for s in structures], dtype=np.float64).reshape(-1, 3, 3),
            frac_coords=np.concatenate(
                [np.asarray(s.frac_coords, dtype=np.float64) for s in structures]
            ) if structures else np.zeros((0, 3)),
            numbers=np.concatenate(
                [np.asarray(s.numbers, dtype=np.int64) for s in structures]
            ) if structures else np.zeros(0, dtype=np.int64),
            atom_ptr=ptr,
            pbc=np.array([s.pbc for s in structures], dtype=bool).reshape(-1, 3),
            properties=[s.properties for s in structures],
        )  # fmt: skip

    def select(self, idx: Sequence[int] | np.ndarray) -> StructureBatch:
        """The structures at int positions ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        counts = np.diff(self.atom_ptr)[idx]
        ptr = np.zeros(idx.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        # atom index of every selected atom: start of its structure + position inside it
        atoms = np.repeat(self.atom_ptr[idx] - ptr[:-1], counts) + np.arange(ptr[-1])
        return StructureBatch(
            ids=[self.ids[i] for i in idx.tolist()],
            sources=[self.sources[i] for i in idx.tolist()],
            lattices=self.lattices[idx], frac_coords=self.frac_coords[atoms],
            numbers=self.numbers[atoms], atom_ptr=ptr, pbc=self.pbc[idx],
            properties=[self.properties[i] for i in idx.tolist()],
        )  # fmt: skip

    @staticmethod
    def concat(batches: Sequence[StructureBatch]) -> StructureBatch:
        """One batch from several, in order (at least one)."""
        if not batches:
            raise ValueError("batches: expected at least one StructureBatch, got none")
        ptr = np.zeros(sum(b.n_structures for b in batches) + 1, dtype=np.int64)
        np.cumsum(np.concatenate([np.diff(b.atom_ptr) for b in batches]), out=ptr[1:])
        return StructureBatch(
            ids=[i for b in batches for i in b.ids],
            sources=[s for b in batches for s in b.sources],
            lattices=np.concatenate([b.lattices for b in batches]),
            frac_coords=np.concatenate([b.frac_coords for b in batches]),
            numbers=np.concatenate([b.numbers for b in batches]),
            atom_ptr=ptr, pbc=np.concatenate([b.pbc for b in batches]),
            properties=[p for b in batches for p in b.properties],
        )  # fmt: skip


def batch_suspects(
    lattices: np.ndarray, frac_coords: np.ndarray, atom_ptr: np.ndarray, pbc: np.ndarray
) -> np.ndarray:
    """(S,) bool: structures that may fail `Structure.validate` (vectorised over a batch).

    Covers non-finite values, singular lattices and duplicated positions with the same
    arithmetic as the per-structure checks, so a False row passes them; True rows are
    re-checked one by one (which gives the exact reason). Inputs as in `StructureBatch`;
    every structure must have at least one atom.
    """
    s = lattices.shape[0]
    seg = np.repeat(np.arange(s), np.diff(atom_ptr))  # (A,) structure of each atom
    bad = ~np.isfinite(lattices.reshape(s, 9)).all(axis=1)
    bad[seg[~np.isfinite(frac_coords).all(axis=1)]] = True
    a, b, c = lattices[:, 0], lattices[:, 1], lattices[:, 2]  # (S, 3) each
    det = (a[:, 0] * (b[:, 1] * c[:, 2] - b[:, 2] * c[:, 1])
           - a[:, 1] * (b[:, 0] * c[:, 2] - b[:, 2] * c[:, 0])
           + a[:, 2] * (b[:, 0] * c[:, 1] - b[:, 1] * c[:, 0]))  # fmt: skip
    lengths = np.sqrt((lattices * lattices).sum(axis=2))  # (S, 3)
    with np.errstate(invalid="ignore", over="ignore"):
        # 1% margin: rows near the threshold go to the exact scalar check
        bad |= np.abs(det) < 1.01 * SINGULAR_TOL * lengths.prod(axis=1)
        bad |= ~(lengths > 0).all(axis=1)
        with np.errstate(all="ignore"):
            grid = np.round(np.nan_to_num(frac_coords) * (1 / DUPLICATE_GRID)).astype(np.int64)
    period = round(1 / DUPLICATE_GRID)
    grid = np.where(pbc[seg], grid % period, grid).astype(np.uint64)  # (A, 3)
    # one wrapping 64-bit hash per atom: equal positions in one structure always collide;
    # an accidental collision only sends a valid row to the exact check
    mix = np.uint64(0x9E3779B97F4A7C15)
    key = ((grid[:, 0] * mix + grid[:, 1]) * mix + grid[:, 2]) * mix + seg.astype(np.uint64)
    ordered = np.sort(key)
    dup = ordered[1:][ordered[1:] == ordered[:-1]]
    if dup.size:
        bad[seg[np.isin(key, dup)]] = True
    return bad
