"""Boundary checks for the neighbour-list API, vectorised over a batch of structures.

Every check raises ``TypeError`` (wrong kind of input) or ``ValueError`` (wrong value) naming
the argument and, in a batch, the index of the first offending structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_Z = 118
# |det L| below this fraction of |a||b||c| counts as singular (a volume of 1e-6 of a cube)
SINGULAR_RTOL = 1e-6


@dataclass(frozen=True)
class BatchInput:
    """Validated, contiguous inputs of a batch of S structures with A atoms in total.

    Attributes:
        lattices: (S, 3, 3) float64, Å, rows a, b, c.
        frac_coords: (A, 3) float64, as given (not wrapped).
        numbers: (A,) int32, 1..118.
        atom_ptr: (S + 1,) int64, atoms of structure s are ``atom_ptr[s]:atom_ptr[s + 1]``.
        pbc: (S, 3) bool.
        k: neighbours per atom.
    """

    lattices: np.ndarray
    frac_coords: np.ndarray
    numbers: np.ndarray
    atom_ptr: np.ndarray
    pbc: np.ndarray
    k: int


def _real_array(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected a real (float or integer) array, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _int_array(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    return arr


def check_k(k: Any) -> int:
    """Return ``k`` as int; TypeError unless an integer, ValueError unless >= 1."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k: expected an int, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"k: expected k >= 1, got {k}")
    return int(k)


def check_num_threads(num_threads: Any) -> int:
    """Return ``num_threads`` as int; 0 means all available threads."""
    if isinstance(num_threads, (bool, np.bool_)) or not isinstance(num_threads, (int, np.integer)):
        raise TypeError(f"num_threads: expected an int, got {type(num_threads).__name__}")
    if num_threads < 0:
        raise ValueError(f"num_threads: expected >= 0 (0 = all cores), got {num_threads}")
    return int(num_threads)


def structure_of(atom_ptr: np.ndarray, atom: int) -> int:
    """Index of the structure holding global atom index ``atom``."""
    return int(np.searchsorted(atom_ptr, atom, side="right") - 1)


def check_pbc(pbc: Any, n_structures: int) -> np.ndarray:
    """Broadcast ``pbc`` (bool, (3,) or (S, 3) bools) to an (S, 3) bool array."""
    arr = np.asarray(pbc)
    if arr.dtype != np.bool_:
        raise TypeError(f"pbc: expected bool, three bools or (S, 3) bools, got dtype {arr.dtype}")
    if arr.shape not in ((), (3,), (n_structures, 3)):
        raise ValueError(
            f"pbc: expected shape (), (3,) or ({n_structures}, 3), got {arr.shape}"
        )
    return np.ascontiguousarray(np.broadcast_to(arr, (n_structures, 3)))


def _check_shapes(lattices: np.ndarray, frac: np.ndarray, numbers: np.ndarray,
                  atom_ptr: np.ndarray) -> None:
    if lattices.ndim != 3 or lattices.shape[1:] != (3, 3):
        raise ValueError(f"lattices: expected shape (S, 3, 3), got {lattices.shape}")
    if frac.ndim != 2 or frac.shape[1] != 3:
        raise ValueError(f"frac_coords: expected shape (A, 3), got {frac.shape}")
    if numbers.shape != (frac.shape[0],):
        raise ValueError(
            f"numbers: expected shape ({frac.shape[0]},) to match frac_coords, got {numbers.shape}"
        )
    n_structures = lattices.shape[0]
    if atom_ptr.shape != (n_structures + 1,):
        raise ValueError(
            f"atom_ptr: expected shape ({n_structures + 1},) for {n_structures} lattices, "
            f"got {atom_ptr.shape}"
        )


def _check_atom_ptr(atom_ptr: np.ndarray, n_atoms: int) -> None:
    if atom_ptr[0] != 0 or atom_ptr[-1] != n_atoms:
        raise ValueError(
            f"atom_ptr: expected to start at 0 and end at {n_atoms} (len(frac_coords)), "
            f"got {atom_ptr[0]} .. {atom_ptr[-1]}"
        )
    sizes = np.diff(atom_ptr)
    if np.any(sizes < 0):
        s = int(np.flatnonzero(sizes < 0)[0])
        raise ValueError(f"atom_ptr: expected non-decreasing offsets, decreases at structure {s}")
    if np.any(sizes == 0):
        s = int(np.flatnonzero(sizes == 0)[0])
        raise ValueError(f"atom_ptr: structure {s} is empty (no atoms)")


def _check_values(lattices: np.ndarray, frac: np.ndarray, numbers: np.ndarray,
                  atom_ptr: np.ndarray, pbc: np.ndarray) -> None:
    bad = ~np.isfinite(lattices).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"lattices: structure {int(np.flatnonzero(bad)[0])} has NaN or inf")
    bad = ~np.isfinite(frac).all(axis=1)
    if bad.any():
        atom = int(np.flatnonzero(bad)[0])
        s = structure_of(atom_ptr, atom)
        raise ValueError(
            f"frac_coords: structure {s}, atom {atom - atom_ptr[s]} has NaN or inf"
        )
    bad = (numbers < 1) | (numbers > MAX_Z)
    if bad.any():
        atom = int(np.flatnonzero(bad)[0])
        s = structure_of(atom_ptr, atom)
        raise ValueError(
            f"numbers: expected atomic numbers in 1..{MAX_Z}, structure {s}, "
            f"atom {atom - atom_ptr[s]} has {numbers[atom]}"
        )
    periodic = pbc.any(axis=1)
    if periodic.any():
        det = np.abs(np.linalg.det(lattices))
        scale = np.prod(np.linalg.norm(lattices, axis=2), axis=1)
        bad = periodic & ~(det > SINGULAR_RTOL * scale)  # a zero row has scale 0
        if bad.any():
            s = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"lattices: structure {s} is singular or nearly so "
                f"(|det| = {det[s]:.3g} < {SINGULAR_RTOL:g} * |a||b||c| = {scale[s]:.3g} Å^3)"
            )


def check_batch(lattices: Any, frac_coords: Any, numbers: Any, atom_ptr: Any, pbc: Any,
                k: Any) -> BatchInput:
    """Validate a batch and return it as contiguous arrays of the backend dtypes."""
    k = check_k(k)
    lat = _real_array(lattices, "lattices")
    frac = _real_array(frac_coords, "frac_coords")
    nums = _int_array(numbers, "numbers")
    ptr = _int_array(atom_ptr, "atom_ptr")
    _check_shapes(lat, frac, nums, ptr)
    pbc_arr = check_pbc(pbc, lat.shape[0])
    _check_atom_ptr(ptr, frac.shape[0])
    _check_values(lat, frac, nums, ptr, pbc_arr)
    return BatchInput(
        lattices=lat,
        frac_coords=frac,
        numbers=np.ascontiguousarray(nums, dtype=np.int32),
        atom_ptr=np.ascontiguousarray(ptr, dtype=np.int64),
        pbc=pbc_arr,
        k=k,
    )


def check_single(lattice: Any, frac_coords: Any, numbers: Any, pbc: Any,
                 k: Any) -> BatchInput:
    """Validate one structure and return it as a batch of one."""
    lat = _real_array(lattice, "lattice")
    if lat.shape != (3, 3):
        raise ValueError(f"lattice: expected shape (3, 3), got {lat.shape}")
    frac = _real_array(frac_coords, "frac_coords")
    if frac.ndim != 2 or frac.shape[1] != 3:
        raise ValueError(f"frac_coords: expected shape (N, 3), got {frac.shape}")
    if frac.shape[0] == 0:
        raise ValueError("frac_coords: the structure is empty (no atoms)")
    pbc_arr = np.asarray(pbc)
    if pbc_arr.dtype == np.bool_ and pbc_arr.shape not in ((), (3,)):
        raise ValueError(f"pbc: expected a bool or three bools, got shape {pbc_arr.shape}")
    ptr = np.array([0, frac.shape[0]], dtype=np.int64)
    return check_batch(lat[None], frac, numbers, ptr, pbc, k)
