"""Atom rows of the data path: equivalent-atom sharing and neighbour rows for ``rounds > 1``.

Round 1 (the design). Atoms of one structure whose 20-entry lists agree (same atomic
numbers, distances equal after rounding to ``SHARE_TOL`` = 1e-4 Å) get identical per-atom
LSTM outputs, so they share one row (``shared_rows``).

Round 2 (``ModelConfig.rounds = 2``) reads, for every entry of an atom's list, the round-1
vector of the atom that entry is (the centre: the atom itself). The round-1 key is not
sufficient for sharing a round-2 row: two atoms with identical lists can have neighbours
whose own lists differ. ``round_rows`` therefore refines it: atoms share a round-2 row only
if their entries point, position by position, to the same round-1 rows, which makes their
round-2 inputs identical exactly.

Entry order for round 2: the stored neighbour order, except that inside a run of entries
with equal atomic number and equal rounded distance (a tie group, whose internal order
follows atom indices by the neighbour-list contract) the entries are sorted by a hash of the
neighbour's own list. The round-2 input then does not depend on atom order, and
symmetry-equivalent atoms keep sharing their row.
"""

from __future__ import annotations

import numpy as np

from fastgap.neighbors import core_function

SHARE_TOL = 1e-4  # Å: lists whose distances round equal at this step share one atom row
_HASH_SEED = 0x5EED


def _list_key(numbers: np.ndarray, distances: np.ndarray, lengths: np.ndarray,
              lead: np.ndarray | None = None) -> np.ndarray:
    """(A, 2L) int64: the atomic numbers and rounded distances of each list, -1 past it;
    with ``lead`` (A,) int64, that column first: (A, 1 + 2L)."""
    n, width = numbers.shape
    off = 0 if lead is None else 1
    key = np.empty((n, off + 2 * width), dtype=np.int64)
    if lead is not None:
        key[:, 0] = lead
    key[:, off:off + width] = numbers
    qdist = np.divide(distances, SHARE_TOL, dtype=np.float64)  # (A, L) in SHARE_TOL steps
    np.rint(qdist, out=qdist)  # round half to even, as np.round
    odd = ~(np.abs(qdist) <= 9e18)  # non-finite (padding: +inf): one value of its own
    qdist[odd] = 0.0
    key[:, off + width:] = qdist
    key[:, off + width:][odd] = np.iinfo(np.int64).min
    if bool((lengths < width).any()):
        past = np.arange(width)[None, :] >= lengths[:, None]  # (A, L)
        key[:, off:off + width][past] = -1
        key[:, off + width:][past] = -1
    return key


def _hash_rows(key: np.ndarray) -> np.ndarray:
    """(A,) uint64 hash of each row of an int64 ``key`` (A, C) (fixed weights, so stable)."""
    weights = np.random.default_rng(_HASH_SEED).integers(1, 2**63, key.shape[1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (np.ascontiguousarray(key).view(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def group_rows(key: np.ndarray, atom_ptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group the atoms whose int64 ``key`` rows (A, C) are equal; column 0 is the structure.

    Returns:
        is_rep: (A,) bool, True for the first atom of each group (the row that is kept).
        slot: (A,) int64, the index of an atom's group among its structure's kept rows.
    """
    n_atoms = key.shape[0]
    counts = np.diff(atom_ptr)
    struct_of_atom = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    # group by a 64-bit hash of the row (fast to sort), then check the groups exactly
    _, first, inverse = np.unique(_hash_rows(key), return_index=True, return_inverse=True)
    if not np.array_equal(key, key[first[inverse.ravel()]]):  # a hash collision: exact path
        width = key.dtype.itemsize * key.shape[1]
        rows = np.ascontiguousarray(key).view(np.dtype((np.void, width)))
        _, first, inverse = np.unique(rows.ravel(), return_index=True, return_inverse=True)
    rep = first[inverse.ravel()]  # (A,) global index of each atom's representative
    is_rep = rep == np.arange(n_atoms)
    rank = np.cumsum(is_rep) - 1  # global rank of each kept row
    first_rank = np.zeros(len(counts), dtype=np.int64)
    nonempty = counts > 0
    first_rank[nonempty] = rank[atom_ptr[:-1][nonempty]]
    slot = rank[rep] - first_rank[struct_of_atom]
    return is_rep, slot


def shared_rows(
    numbers: np.ndarray, distances: np.ndarray, lengths: np.ndarray, atom_ptr: np.ndarray,
    *, compiled: bool = True, extra: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Group each structure's atoms by identical 20-entry lists (round-1 rows).

    Args:
        numbers: (A, L) int64 entry atomic numbers (column 0 = the centre).
        distances: (A, L) float32 Å.
        lengths: (A,) int64 valid entries per row; entries past it are ignored.
        atom_ptr: (S+1,) int64 atom offsets.
        compiled: use the compiled core's grouping (``cpp/fastgap_rows.hpp``, the same result,
            tested against this module's NumPy path) when it is built.
        extra: (A, ...) float per-atom values that must also agree (rounded to
            ``SHARE_TOL``), e.g. the angle signatures; None = the lists alone.

    Returns ``(is_rep, slot)`` as ``group_rows``.
    """
    if extra is not None:  # the lists' key plus a hash of the rounded extra values
        counts = np.diff(atom_ptr)
        struct_of_atom = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        flat = np.asarray(extra).reshape(len(extra), -1)
        hashes = np.concatenate([  # in blocks: the rounded values of all atoms at once are big
            _hash_rows(np.rint(flat[i:i + 65536].astype(np.float64) / SHARE_TOL).astype(np.int64))
            for i in range(0, len(flat), 65536)
        ] or [np.zeros(0, dtype=np.uint64)])
        key = _list_key(numbers, distances, lengths, struct_of_atom)
        return group_rows(np.concatenate([key, hashes.view(np.int64)[:, None]], axis=1),
                          atom_ptr)
    core = core_function("group_lists") if compiled else None
    if core is not None:
        return core(np.ascontiguousarray(numbers, dtype=np.int64),
                    np.ascontiguousarray(distances, dtype=np.float32),
                    np.ascontiguousarray(lengths, dtype=np.int64),
                    np.ascontiguousarray(atom_ptr, dtype=np.int64), SHARE_TOL)
    counts = np.diff(atom_ptr)
    struct_of_atom = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    return group_rows(_list_key(numbers, distances, lengths, struct_of_atom), atom_ptr)


def entry_atoms(
    numbers: np.ndarray, distances: np.ndarray, lengths: np.ndarray, nbr_indices: np.ndarray,
    atom_ptr: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """(A, L) int64 local atom index of every entry in the round-2 order, -1 past the length.

    Column 0 is the atom itself; columns 1.. come from ``nbr_indices`` (A, L-1), reordered
    inside tie groups (equal number and rounded distance) by the hash of the neighbour's
    list (module doc). ``numbers``, ``distances``, ``lengths`` as in ``shared_rows``.
    """
    n_atoms, width = numbers.shape
    counts = np.diff(atom_ptr)
    start = np.repeat(atom_ptr[:-1], counts)  # (A,) first atom of each atom's structure
    local = np.concatenate([(np.arange(n_atoms) - start)[:, None], nbr_indices], axis=1)
    valid = np.arange(width)[None, :] < lengths[:, None]
    local = np.where(valid, local, -1).astype(np.int64)  # (A, L)
    key = _list_key(numbers, distances, lengths)
    # dense rank of an order-independent hash of each atom's list (fits in 40 bits)
    _, content = np.unique(_hash_rows(key), return_inverse=True)  # (A,)
    nbr_rank = np.where(valid, content.ravel()[np.where(valid, local + start[:, None], 0)], 0)
    # a tie group starts where (number, rounded distance) changes along the row
    same = np.zeros((n_atoms, width), dtype=bool)
    same[:, 1:] = (key[:, 1:width] == key[:, :width - 1]) & (
        key[:, width + 1:] == key[:, width:-1]
    )  # fmt: skip
    same[:, 1] = False  # the centre is never part of a neighbour tie group
    group = np.where(same, 0, np.arange(width)[None, :])
    group = np.maximum.accumulate(group, axis=1)  # (A, L) column of the group's first entry
    order = np.argsort((group.astype(np.int64) << 40) | nbr_rank, axis=1, kind="stable")
    return np.take_along_axis(local, order, axis=1)


def round_rows(
    entries: np.ndarray, slot: np.ndarray, atom_ptr: np.ndarray, *, share: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round-2 rows from ``entry_atoms`` output (A, L) and the round-1 ``slot`` (A,).

    Returns:
        is_rep: (A,) bool and slot: (A,) int64 of the round-2 grouping (``group_rows``);
            without ``share`` every atom has its own row.
        entry_rows: (A, L) int64 structure-local round-1 row of every entry, -1 past the
            length (column 0 = the atom's own round-1 row).
    """
    counts = np.diff(atom_ptr)
    start = np.repeat(atom_ptr[:-1], counts)[:, None]
    entry_rows = np.where(entries >= 0, slot[np.where(entries >= 0, entries + start, 0)], -1)
    if not share:
        return np.ones(len(slot), dtype=bool), np.arange(len(slot)) - start[:, 0], entry_rows
    struct_of_atom = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    is_rep, slot2 = group_rows(np.concatenate([struct_of_atom[:, None], entry_rows], 1), atom_ptr)
    return is_rep, slot2, entry_rows
