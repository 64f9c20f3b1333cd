"""k nearest neighbours of every atom over all periodic images, as ordered sequences.

The order is part of the file format (an LSTM reads it), so every backend produces the same
sequence. Contract (also in DEVELOPERS.md, "Contract: neighbour lists"):

- Entries are sorted by distance (Å). Ties are grouped by a chained gap rule: after sorting by
  exact distance, a new group starts where the gap to the previous distance exceeds
  ``TIE_TOL = 2**-15`` Å. Within a group entries are ordered by atomic number (ascending), then
  exact distance, then neighbour index, then image (lexicographic). Truncation to k happens
  after this ordering.
- The atom itself (index i, image 0) is never in its own list; its periodic images are.
- ``images`` are integer lattice offsets relative to the *input* fractional coordinates: the
  neighbour sits at ``frac_coords[indices] + images``.
- Fewer than k reachable atoms (no periodic axis): padding ``numbers`` 0, ``distances`` +inf,
  ``indices`` -1, ``images`` 0; ``counts`` gives the valid entries.
- Two atoms (or an atom and a periodic image) closer than ``MIN_DISTANCE`` are an error.

Backends: ``"cpp"`` (compiled ``fastgap._core``), ``"numba"``, ``"reference"`` (brute-force
NumPy, the oracle); ``"auto"`` means ``"cpp"`` and is an error while the extension is not built.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastgap.neighbors._validate import (
    MAX_Z,
    BatchInput,
    check_batch,
    check_num_threads,
    check_single,
    structure_of,
)

__all__ = [
    "BACKENDS",
    "MAX_Z",
    "MIN_DISTANCE",
    "TIE_TOL",
    "BackendUnavailableError",
    "NeighborList",
    "neighbor_lists",
    "neighbor_lists_batch",
]

TIE_TOL: float = 2.0**-15  # Å; a binary value, so decimal lattice constants do not land on it
MIN_DISTANCE: float = 0.5  # Å
BACKENDS = ("auto", "cpp", "numba", "reference")


class BackendUnavailableError(RuntimeError):
    """A requested neighbour-list backend is not available in this installation."""


@dataclass(frozen=True)
class NeighborList:
    """Ordered k-nearest-neighbour lists of N atoms (N summed over structures for a batch).

    Attributes:
        numbers: (N, k) int16 neighbour atomic numbers, 0 = padding.
        distances: (N, k) float64 Å, +inf = padding.
        indices: (N, k) int32 neighbour atom index (local to its structure), -1 = padding.
        images: (N, k, 3) int32 lattice offsets; the neighbour is at
            ``frac_coords[indices] + images`` (input coordinates), 0 in padding.
        counts: (N,) int32 number of valid entries per atom.
    """

    numbers: np.ndarray
    distances: np.ndarray
    indices: np.ndarray
    images: np.ndarray
    counts: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(N, k) bool, True on valid entries, False on padding."""
        return np.arange(self.numbers.shape[1]) < self.counts[:, None]


def _cpp_available() -> bool:
    return importlib.util.find_spec("fastgap._core") is not None


def core_function(name: str) -> Any:
    """The compiled core's function ``name`` (``fastgap._core.<name>``), or None in a source
    tree without the built extension."""
    if not _cpp_available():
        return None
    return getattr(importlib.import_module("fastgap._core"), name, None)


def _resolve_backend(backend: Any) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend in ("auto", "cpp") and not _cpp_available():
        raise BackendUnavailableError(
            f"backend={backend!r}: the compiled extension fastgap._core is not built; "
            "install fastgap with its C++ core (pip install -e .) or pass backend='numba'"
        )
    return "cpp" if backend == "auto" else backend


def _check_min_distance(result: NeighborList, atom_ptr: np.ndarray) -> None:
    """Raise if any atom's nearest entry is closer than MIN_DISTANCE (vectorised)."""
    close = result.distances[:, 0] < MIN_DISTANCE if result.distances.shape[0] else []
    if not np.any(close):
        return
    atom = int(np.flatnonzero(close)[0])
    s = structure_of(atom_ptr, atom)
    other = int(result.indices[atom, 0])
    image = tuple(int(x) for x in result.images[atom, 0])
    raise ValueError(
        f"frac_coords: structure {s}, atoms {atom - atom_ptr[s]} and {other} (image {image}) "
        f"are {result.distances[atom, 0]:.4f} Å apart, closer than MIN_DISTANCE = "
        f"{MIN_DISTANCE} Å"
    )


def _run(data: BatchInput, backend: str, num_threads: int) -> NeighborList:
    if backend == "cpp":
        core = importlib.import_module("fastgap._core")
        arrays = core.knn_batch(data.lattices, data.frac_coords, data.numbers, data.atom_ptr,
                                data.pbc, data.k, num_threads, TIE_TOL, MIN_DISTANCE)
        return NeighborList(*arrays)
    if backend == "numba":
        from fastgap.neighbors import numba_backend

        arrays = numba_backend.knn_batch(data.lattices, data.frac_coords, data.numbers,
                                         data.atom_ptr, data.pbc, data.k, TIE_TOL, num_threads)
    else:
        from fastgap.neighbors import reference

        arrays = reference.knn_batch(data.lattices, data.frac_coords, data.numbers,
                                     data.atom_ptr, data.pbc, data.k, TIE_TOL)
    result = NeighborList(*arrays)
    _check_min_distance(result, data.atom_ptr)
    return result


def neighbor_lists(lattice: Any, frac_coords: Any, numbers: Any, *, k: int = 19,
                   pbc: Any = True, backend: str = "auto") -> NeighborList:
    """The k nearest neighbours of every atom of one structure, in contract order.

    Args:
        lattice: (3, 3) float Å, rows are the lattice vectors a, b, c (a box for molecules).
        frac_coords: (N, 3) float fractional coordinates, any real values.
        numbers: (N,) integer atomic numbers, 1..118.
        k: neighbours per atom (>= 1).
        pbc: a bool or three bools; along a non-periodic axis there are no images.
        backend: "auto" (= "cpp"), "cpp", "numba" or "reference".

    Returns:
        `NeighborList` with (N, k) arrays; see the module docstring for order and padding.

    Raises:
        TypeError / ValueError naming the argument; BackendUnavailableError if the backend
        is not built.
    """
    name = _resolve_backend(backend)
    data = check_single(lattice, frac_coords, numbers, pbc, k)
    return _run(data, name, 0)


def neighbor_lists_batch(lattices: Any, frac_coords: Any, numbers: Any, atom_ptr: Any, *,
                         k: int = 19, pbc: Any = True, backend: str = "auto",
                         num_threads: int = 0) -> NeighborList:
    """Neighbour lists of S structures with A atoms in total, concatenated over atoms.

    Args:
        lattices: (S, 3, 3) float Å, rows a, b, c per structure.
        frac_coords: (A, 3) float fractional coordinates of all atoms, structure after structure.
        numbers: (A,) integer atomic numbers, 1..118.
        atom_ptr: (S + 1,) integer offsets, structure s owns atoms ``atom_ptr[s]:atom_ptr[s+1]``;
            starts at 0, ends at A, every structure non-empty.
        k: neighbours per atom (>= 1).
        pbc: a bool, three bools, or (S, 3) bools.
        backend: "auto" (= "cpp"), "cpp", "numba" or "reference".
        num_threads: threads across structures (cpp, numba); 0 = all.

    Returns:
        `NeighborList` with (A, k) arrays; ``indices`` are local to each structure.

    Raises:
        TypeError / ValueError naming the argument and the structure index;
        BackendUnavailableError if the backend is not built.
    """
    name = _resolve_backend(backend)
    threads = check_num_threads(num_threads)
    data = check_batch(lattices, frac_coords, numbers, atom_ptr, pbc, k)
    return _run(data, name, threads)
