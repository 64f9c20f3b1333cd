"""The periodicity and the elements a model was trained on, and the inputs outside them.

Every structure is one of three kinds by its ``pbc`` flags: ``periodic`` (periodic along
all three lattice vectors: crystals, slabs with vacuum), ``molecule`` (no periodic axis)
and ``partial`` (one or two periodic axes). A model's neighbour lists differ in kind between
them (a molecule's lists end at its last atom), so a model trained on crystals alone says
nothing trustworthy about a molecule, and the other way round. Training records the counts
of each kind in the training split (checkpoint metadata ``training_periodicity``);
`fastgap predict` rejects an input whose kind no member was trained on, with the reason.

Training also records the atomic numbers present in the training split (metadata
``training_elements``): an element a model never saw has an untrained embedding. A bundle
whose card lists them per member (the ``qm9`` bundle) rejects inputs holding another
element; other bundles and runs are held to their ``max_z`` alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

KINDS = ("periodic", "partial", "molecule")
PERIODICITY_KEY = "training_periodicity"
ELEMENTS_KEY = "training_elements"


def element_set(numbers: np.ndarray, atom_ptr: np.ndarray, structures: np.ndarray) -> list[int]:
    """Sorted atomic numbers present in ``structures`` (indices) of a flat batch.

    ``numbers`` (A,) int atomic numbers, ``atom_ptr`` (S+1,) int64 atom offsets.
    """
    chosen = np.zeros(len(atom_ptr) - 1, dtype=bool)
    chosen[np.asarray(structures, dtype=np.int64)] = True
    atoms = np.repeat(chosen, np.diff(atom_ptr))  # (A,) atom of a chosen structure
    return [int(z) for z in np.unique(np.asarray(numbers)[atoms])]


def check_elements(elements: Any, where: str) -> list[int]:
    """Validate a recorded list of atomic numbers (from a checkpoint or a bundle card)."""
    if (not isinstance(elements, list) or not elements
            or not all(isinstance(z, int) and 1 <= z <= 118 for z in elements)):
        raise ValueError(f"{where}: expected a non-empty list of atomic numbers 1..118, got "
                         f"{elements!r}")
    return elements


def periodicity_kinds(pbc: np.ndarray) -> np.ndarray:
    """(S, 3) bool ``pbc`` -> (S,) int64 index into ``KINDS``."""
    pbc = np.asarray(pbc, dtype=bool).reshape(-1, 3)
    n = pbc.sum(axis=1)
    return np.where(n == 3, 0, np.where(n == 0, 2, 1)).astype(np.int64)


def periodicity_counts(pbc: np.ndarray) -> dict[str, int]:
    """Structures of each kind in (S, 3) bool ``pbc``: ``{"periodic": n, ...}``."""
    counts = np.bincount(periodicity_kinds(pbc), minlength=len(KINDS))
    return {kind: int(c) for kind, c in zip(KINDS, counts)}


def check_counts(counts: Any, where: str) -> dict[str, int]:
    """Validate a recorded ``{kind: count}`` mapping (from a checkpoint or a bundle card)."""
    if (not isinstance(counts, dict) or set(counts) != set(KINDS)
            or not all(isinstance(v, int) and v >= 0 for v in counts.values())):
        raise ValueError(f"{where}: expected counts of {list(KINDS)} (ints >= 0), got {counts!r}")
    return counts


def shared_kinds(per_member: Sequence[dict[str, int] | None]) -> set[str] | None:
    """Kinds every member was trained on (count > 0); None when any member's is unknown."""
    if not per_member or any(c is None for c in per_member):
        return None
    return set.intersection(*({k for k, n in c.items() if n > 0} for c in per_member))


def describe(counts: Sequence[dict[str, int]]) -> str:
    """'15,021-25,626 periodic, 0 partial, 0 molecule': the range over members per kind."""
    parts = []
    for kind in KINDS:
        lo, hi = min(c[kind] for c in counts), max(c[kind] for c in counts)
        parts.append(f"{lo:,} {kind}" if lo == hi else f"{lo:,}-{hi:,} {kind}")
    return ", ".join(parts)


def outside(pbc: np.ndarray, allowed: set[str]) -> np.ndarray:
    """(S,) bool: structures whose kind is not in ``allowed``."""
    kinds = periodicity_kinds(pbc)
    ok = np.array([k in allowed for k in KINDS])
    return ~ok[kinds]
