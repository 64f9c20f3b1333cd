"""Brute-force NumPy k-nearest-neighbour lists: slow, simple, the oracle for the fast backends.

For each atom: enumerate every periodic image within a radius (image range from the
interplanar spacings), compute all distances, order the candidates by the full contract key
with one ``np.lexsort``, and double-check that the tie group holding the k-th entry is closed
inside the searched radius; otherwise grow the radius and start that atom again.
"""

from __future__ import annotations

import numpy as np

_GROW = 1.5


def _initial_radius(lattice: np.ndarray, n_atoms: int, k: int) -> float:
    """A radius expected to hold about 2k atoms at the cell's mean density, Å."""
    volume_per_atom = abs(np.linalg.det(lattice)) / n_atoms
    return float(np.cbrt(3.0 * volume_per_atom * (2 * k + 4) / (4.0 * np.pi)))


def _image_offsets(lattice: np.ndarray, pbc: np.ndarray, radius: float) -> np.ndarray:
    """All integer offsets (M, 3) that can hold a neighbour within ``radius`` of any atom."""
    # |fractional component a| <= |cart| * |column a of L^-1| = |cart| / interplanar spacing a
    inv_col_norms = np.linalg.norm(np.linalg.inv(lattice), axis=0)
    # wrapped coordinates differ by less than 1, so |n_a| < radius * inv_col_norms[a] + 1
    reach = np.where(pbc, np.floor(radius * inv_col_norms).astype(np.int64) + 1, 0)
    axes = [np.arange(-r, r + 1) for r in reach]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def _atom_list(i: int, lattice: np.ndarray, wrapped: np.ndarray, shift: np.ndarray,
               numbers: np.ndarray, pbc: np.ndarray, k: int, tie_tol: float,
               radius: float) -> tuple[np.ndarray, ...] | None:
    """Ordered candidates of atom i, or None if the k-th tie group is not closed in radius."""
    periodic = bool(pbc.any())
    offsets = _image_offsets(lattice, pbc, radius) if periodic else np.zeros((1, 3), np.int64)
    n_atoms = wrapped.shape[0]
    j = np.repeat(np.arange(n_atoms), offsets.shape[0])  # (N*M,)
    img = np.tile(offsets, (n_atoms, 1))  # (N*M, 3)
    frac_delta = (wrapped[j] - wrapped[i]) + img
    # cartesian components summed in a fixed order so every backend rounds alike
    cart = [frac_delta[:, 0] * lattice[0, c] + frac_delta[:, 1] * lattice[1, c]
            + frac_delta[:, 2] * lattice[2, c] for c in range(3)]
    dist = np.sqrt(cart[0] * cart[0] + cart[1] * cart[1] + cart[2] * cart[2])
    keep = ~((j == i) & (img == 0).all(axis=1))
    if periodic:
        keep &= dist <= radius
    j, img, dist = j[keep], img[keep], dist[keep]
    # images relative to the input coordinates: frac[j] + image - frac[i] == delta
    img = img - shift[j] + shift[i]
    by_dist = np.argsort(dist, kind="stable")
    group = np.empty(dist.shape[0], np.int64)
    group[by_dist] = np.concatenate([[0], np.cumsum(np.diff(dist[by_dist]) > tie_tol)])
    order = np.lexsort((img[:, 2], img[:, 1], img[:, 0], j, dist, numbers[j], group))
    if periodic:
        if order.shape[0] < k:
            return None
        last_group = group == group[order[k - 1]]
        if dist[last_group].max() + tie_tol >= radius:
            return None
    order = order[:k]
    return numbers[j[order]], dist[order], j[order], img[order]


def knn_structure(lattice: np.ndarray, frac_coords: np.ndarray, numbers: np.ndarray,
                  pbc: np.ndarray, k: int, tie_tol: float) -> tuple[np.ndarray, ...]:
    """Neighbour lists of one validated structure; arrays as in `knn_batch` for N atoms."""
    n_atoms = frac_coords.shape[0]
    shift = np.where(pbc, np.floor(frac_coords), 0.0)
    wrapped = frac_coords - shift
    # a tiny negative coordinate wraps to exactly 1.0; keep wrapped values in [0, 1)
    edge = wrapped >= 1.0
    wrapped[edge] -= 1.0
    shift[edge] += 1.0
    shift = shift.astype(np.int64)
    out_numbers = np.zeros((n_atoms, k), np.int16)
    out_dist = np.full((n_atoms, k), np.inf)
    out_idx = np.full((n_atoms, k), -1, np.int32)
    out_img = np.zeros((n_atoms, k, 3), np.int32)
    counts = np.zeros(n_atoms, np.int32)
    radius = _initial_radius(lattice, n_atoms, k) if pbc.any() else np.inf
    for i in range(n_atoms):
        found = None
        while found is None:
            found = _atom_list(i, lattice, wrapped, shift, numbers, pbc, k, tie_tol, radius)
            if found is None:
                radius *= _GROW
        n = found[0].shape[0]
        out_numbers[i, :n], out_dist[i, :n], out_idx[i, :n], out_img[i, :n] = found
        counts[i] = n
    return out_numbers, out_dist, out_idx, out_img, counts


def knn_batch(lattices: np.ndarray, frac_coords: np.ndarray, numbers: np.ndarray,
              atom_ptr: np.ndarray, pbc: np.ndarray, k: int,
              tie_tol: float) -> tuple[np.ndarray, ...]:
    """Brute-force neighbour lists of a validated batch (see `fastgap.neighbor_lists_batch`).

    Returns (numbers int16 (A, k), distances float64 (A, k) Å, indices int32 (A, k),
    images int32 (A, k, 3), counts int32 (A,)); no minimum-distance check here.
    """
    parts = [
        knn_structure(lattices[s], frac_coords[atom_ptr[s]:atom_ptr[s + 1]],
                      numbers[atom_ptr[s]:atom_ptr[s + 1]], pbc[s], k, tie_tol)
        for s in range(lattices.shape[0])
    ]
    if not parts:
        return _empty(k)
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def _empty(k: int) -> tuple[np.ndarray, ...]:
    return (np.zeros((0, k), np.int16), np.zeros((0, k)), np.zeros((0, k), np.int32),
            np.zeros((0, k, 3), np.int32), np.zeros(0, np.int32))
