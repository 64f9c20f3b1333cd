"""Numba k-nearest-neighbour lists, parallel across the structures of a batch.

Candidates within a search radius are found in one of two ways. Small cells: for each atom
pair only the images that can lie within the radius are visited (with wrapped coordinates the
fractional separation along periodic axis a is ``w[j, a] - w[i, a] + n_a`` and its magnitude
is at most ``radius / spacing_a``, the interplanar spacing), one or two per axis for typical
cells. Fully periodic cells of 256 atoms or more: cell lists in fractional coordinates with
cells at least one radius thick, so the work per atom does not grow with the cell. The
candidates are ordered by distance, split into tie groups by the chained-gap rule, and each
group up to the one holding the k-th entry is insertion-sorted by the full contract key
(atomic number, distance, index, image). If that group is not closed inside the radius, the
radius grows and the atom starts again. The result is identical to `reference.knn_batch`.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

_GROW = 1.25
_MIN_CAPACITY = 64
_CELL_LIST_MIN_ATOMS = 256  # fully periodic cells this large use cell lists
_MAX_CELLS_PER_AXIS = 64
_RANK_MAX = 96  # candidates; beyond this np.argsort is faster


@njit(cache=True)
def _det(lat: np.ndarray) -> float:
    return (lat[0, 0] * (lat[1, 1] * lat[2, 2] - lat[1, 2] * lat[2, 1])
            - lat[0, 1] * (lat[1, 0] * lat[2, 2] - lat[1, 2] * lat[2, 0])
            + lat[0, 2] * (lat[1, 0] * lat[2, 1] - lat[1, 1] * lat[2, 0]))


@njit(cache=True)
def _inverse_column_norms(lat: np.ndarray) -> np.ndarray:
    """(3,) norms of the columns of L^-1 = 1 / interplanar spacings, 1/Å."""
    out = np.empty(3)
    det = _det(lat)
    for a in range(3):
        u = lat[(a + 1) % 3]
        v = lat[(a + 2) % 3]
        cx = u[1] * v[2] - u[2] * v[1]
        cy = u[2] * v[0] - u[0] * v[2]
        cz = u[0] * v[1] - u[1] * v[0]
        out[a] = np.sqrt(cx * cx + cy * cy + cz * cz) / abs(det)
    return out


@njit(cache=True)
def _gather_pairs(i, lat, wrapped, shift, pbc, inv_norms, radius, cand_d, cand_j, cand_img):
    """Store every neighbour of atom i within radius, visiting for each atom j only the
    images allowed by the interplanar spacings; return how many exist (may exceed the
    capacity of the buffers, in which case the caller grows them and calls again)."""
    n_atoms = wrapped.shape[0]
    capacity = cand_d.shape[0]
    r2max = radius * radius
    # scalars, not small arrays: this runs once per atom and search radius
    reach0 = radius * inv_norms[0]
    reach1 = radius * inv_norms[1]
    reach2 = radius * inv_norms[2]
    w0 = wrapped[i, 0]
    w1 = wrapped[i, 1]
    w2 = wrapped[i, 2]
    s0 = shift[i, 0]
    s1 = shift[i, 1]
    s2 = shift[i, 2]
    count = 0
    for j in range(n_atoms):
        delta0 = wrapped[j, 0] - w0
        delta1 = wrapped[j, 1] - w1
        delta2 = wrapped[j, 2] - w2
        lo0 = hi0 = lo1 = hi1 = lo2 = hi2 = 0
        if pbc[0]:
            lo0 = int(np.ceil(-reach0 - delta0))
            hi0 = int(np.floor(reach0 - delta0))
        if pbc[1]:
            lo1 = int(np.ceil(-reach1 - delta1))
            hi1 = int(np.floor(reach1 - delta1))
        if pbc[2]:
            lo2 = int(np.ceil(-reach2 - delta2))
            hi2 = int(np.floor(reach2 - delta2))
        for n0 in range(lo0, hi0 + 1):
            f0 = delta0 + n0
            x0 = f0 * lat[0, 0]
            y0 = f0 * lat[0, 1]
            z0 = f0 * lat[0, 2]
            for n1 in range(lo1, hi1 + 1):
                f1 = delta1 + n1
                x1 = x0 + f1 * lat[1, 0]
                y1 = y0 + f1 * lat[1, 1]
                z1 = z0 + f1 * lat[1, 2]
                for n2 in range(lo2, hi2 + 1):
                    f2 = delta2 + n2
                    x = x1 + f2 * lat[2, 0]
                    y = y1 + f2 * lat[2, 1]
                    z = z1 + f2 * lat[2, 2]
                    r2 = x * x + y * y + z * z
                    if r2 <= r2max:
                        if j == i and n0 == 0 and n1 == 0 and n2 == 0:
                            continue
                        if count < capacity:
                            cand_d[count] = np.sqrt(r2)
                            cand_j[count] = j
                            # image relative to the input coordinates
                            cand_img[count, 0] = n0 - shift[j, 0] + s0
                            cand_img[count, 1] = n1 - shift[j, 1] + s1
                            cand_img[count, 2] = n2 - shift[j, 2] + s2
                        count += 1
    return count


@njit(cache=True)
def _build_cells(wrapped, inv_norms, radius, use_cells):
    """Bin the atoms of a fully periodic cell into cells at least ``radius`` thick (a single
    cell unless ``use_cells``).

    Returns (n_cells (3,) int64, cell_start (C + 1,) int64, cell_atoms (N,) int64)."""
    n_cells = np.ones(3, np.int64)
    for a in range(3):
        if use_cells:
            n_cells[a] = max(1, min(_MAX_CELLS_PER_AXIS, int(1.0 / (radius * inv_norms[a]))))
    total = n_cells[0] * n_cells[1] * n_cells[2]
    cell_of = np.empty(wrapped.shape[0], np.int64)
    cell_start = np.zeros(total + 1, np.int64)
    for i in range(wrapped.shape[0]):
        c = 0
        for a in range(3):
            # clamped: unwrapped axes (molecules) and rounding must not leave the grid
            bin_a = min(max(int(wrapped[i, a] * n_cells[a]), 0), n_cells[a] - 1)
            c = c * n_cells[a] + bin_a
        cell_of[i] = c
        cell_start[c + 1] += 1
    cell_start = np.cumsum(cell_start)
    fill = cell_start[:-1].copy()
    cell_atoms = np.empty(wrapped.shape[0], np.int64)
    for i in range(wrapped.shape[0]):
        cell_atoms[fill[cell_of[i]]] = i
        fill[cell_of[i]] += 1
    return n_cells, cell_start, cell_atoms


@njit(cache=True)
def _gather_cells(i, lat, wrapped, shift, inv_norms, radius, cells,
                  cand_d, cand_j, cand_img):
    """As `_gather_pairs` for a fully periodic cell, visiting only the cells (with their
    images) that overlap the fractional box of half-widths radius / spacing around atom i."""
    n_cells, cell_start, cell_atoms = cells
    capacity = cand_d.shape[0]
    r2max = radius * radius
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    for a in range(3):
        # widened slightly so rounding in the box never drops an atom inside the radius
        reach = radius * inv_norms[a] * (1.0 + 1e-9) + 1e-12
        lo[a] = np.int64(np.floor((wrapped[i, a] - reach) * n_cells[a]))
        hi[a] = np.int64(np.floor((wrapped[i, a] + reach) * n_cells[a]))
    count = 0
    for u0 in range(lo[0], hi[0] + 1):
        n0 = u0 // n_cells[0]
        for u1 in range(lo[1], hi[1] + 1):
            n1 = u1 // n_cells[1]
            for u2 in range(lo[2], hi[2] + 1):
                n2 = u2 // n_cells[2]
                c = (((u0 - n0 * n_cells[0]) * n_cells[1] + u1 - n1 * n_cells[1]) * n_cells[2]
                     + u2 - n2 * n_cells[2])
                for m in range(cell_start[c], cell_start[c + 1]):
                    j = cell_atoms[m]
                    if j == i and n0 == 0 and n1 == 0 and n2 == 0:
                        continue
                    # same arithmetic, in the same order, as `_gather_pairs` and the reference
                    f0 = (wrapped[j, 0] - wrapped[i, 0]) + n0
                    f1 = (wrapped[j, 1] - wrapped[i, 1]) + n1
                    f2 = (wrapped[j, 2] - wrapped[i, 2]) + n2
                    x = f0 * lat[0, 0] + f1 * lat[1, 0] + f2 * lat[2, 0]
                    y = f0 * lat[0, 1] + f1 * lat[1, 1] + f2 * lat[2, 1]
                    z = f0 * lat[0, 2] + f1 * lat[1, 2] + f2 * lat[2, 2]
                    r2 = x * x + y * y + z * z
                    if r2 <= r2max:
                        if count < capacity:
                            cand_d[count] = np.sqrt(r2)
                            cand_j[count] = j
                            cand_img[count, 0] = n0 - shift[j, 0] + shift[i, 0]
                            cand_img[count, 1] = n1 - shift[j, 1] + shift[i, 1]
                            cand_img[count, 2] = n2 - shift[j, 2] + shift[i, 2]
                        count += 1
    return count


@njit(cache=True)
def _less(p, q, numbers, cand_d, cand_j, cand_img):
    """Contract order inside a tie group: atomic number, distance, index, image."""
    zp = numbers[cand_j[p]]
    zq = numbers[cand_j[q]]
    if zp != zq:
        return zp < zq
    if cand_d[p] != cand_d[q]:
        return cand_d[p] < cand_d[q]
    if cand_j[p] != cand_j[q]:
        return cand_j[p] < cand_j[q]
    for a in range(3):
        if cand_img[p, a] != cand_img[q, a]:
            return cand_img[p, a] < cand_img[q, a]
    return False


@njit(cache=True)
def _sort_segment(order, start, stop, numbers, cand_d, cand_j, cand_img):
    """Insertion sort of order[start:stop] by `_less` (tie groups are small)."""
    for m in range(start + 1, stop):
        p = order[m]
        n = m - 1
        while n >= start and _less(p, order[n], numbers, cand_d, cand_j, cand_img):
            order[n + 1] = order[n]
            n -= 1
        order[n + 1] = p


@njit(cache=True)
def _sort_by_distance(order, count, cand_d):
    """order[:count] = candidate positions by increasing distance."""
    if count > _RANK_MAX:
        order[:count] = np.argsort(cand_d[:count])
        return
    # Each candidate's rank is a branch-free count (ties by position), which the compiler
    # vectorises; an insertion sort here mispredicts on almost every step.
    for m in range(count):
        d = cand_d[m]
        rank = 0
        for n in range(count):
            rank += (cand_d[n] < d) | ((cand_d[n] == d) & (n < m))
        order[rank] = m


@njit(cache=True)
def _order(order, count, k, periodic, radius, tie_tol, numbers, cand_d, cand_j, cand_img):
    """Put the candidates in contract order (in ``order``); return the number of valid
    entries, or -1 if the tie group holding the k-th entry is not closed inside the radius."""
    if periodic and count < k:
        return -1
    _sort_by_distance(order, count, cand_d)
    n_valid = min(count, k)
    if n_valid == 0:
        return 0
    end = n_valid - 1  # last position of the tie group holding entry n_valid - 1
    while end + 1 < count and cand_d[order[end + 1]] - cand_d[order[end]] <= tie_tol:
        end += 1
    if periodic and end == count - 1 and cand_d[order[end]] + tie_tol >= radius:
        return -1
    start = 0
    for m in range(1, end + 2):
        if m == end + 1 or cand_d[order[m]] - cand_d[order[m - 1]] > tie_tol:
            _sort_segment(order, start, m, numbers, cand_d, cand_j, cand_img)
            start = m
    return n_valid


@njit(cache=True)
def _wrap(frac, pbc):
    """Wrapped coordinates in [0, 1) along periodic axes and the integer shifts removed:
    (wrapped (N, 3) float64, shift (N, 3) int64), frac = wrapped + shift."""
    wrapped = frac.copy()
    shift = np.zeros(frac.shape, np.int64)
    for i in range(frac.shape[0]):
        for a in range(3):
            if pbc[a]:
                cell = np.floor(frac[i, a])
                w = frac[i, a] - cell
                if w >= 1.0:  # a tiny negative coordinate rounds to 1.0
                    w -= 1.0
                    cell += 1.0
                shift[i, a] = np.int64(cell)
                wrapped[i, a] = w
    return wrapped, shift


@njit(cache=True)
def _knn_structure(lat, frac, numbers, pbc, k, tie_tol,
                   out_numbers, out_dist, out_idx, out_img, out_counts):
    """Fill the output rows of one structure (N atoms), entries and padding."""
    n_atoms = frac.shape[0]
    wrapped, shift = _wrap(frac, pbc)
    periodic = pbc[0] or pbc[1] or pbc[2]
    inv_norms = np.zeros(3)
    radius = np.inf
    if periodic:
        inv_norms = _inverse_column_norms(lat)
        volume_per_atom = abs(_det(lat)) / n_atoms
        radius = np.cbrt(3.0 * volume_per_atom * (1.2 * k + 4) / (4.0 * np.pi))
    use_cells = pbc[0] and pbc[1] and pbc[2] and n_atoms >= _CELL_LIST_MIN_ATOMS
    cells = _build_cells(wrapped, inv_norms, radius, use_cells)
    capacity = max(_MIN_CAPACITY, 4 * k)
    cand_d = np.empty(capacity)
    cand_j = np.empty(capacity, np.int64)
    cand_img = np.empty((capacity, 3), np.int64)
    order = np.empty(capacity, np.int64)
    for i in range(n_atoms):
        while True:
            if use_cells:
                count = _gather_cells(i, lat, wrapped, shift, inv_norms, radius, cells,
                                      cand_d, cand_j, cand_img)
            else:
                count = _gather_pairs(i, lat, wrapped, shift, pbc, inv_norms, radius,
                                      cand_d, cand_j, cand_img)
            if count > capacity:
                capacity = 2 * count
                cand_d = np.empty(capacity)
                cand_j = np.empty(capacity, np.int64)
                cand_img = np.empty((capacity, 3), np.int64)
                order = np.empty(capacity, np.int64)
                continue
            n_valid = _order(order, count, k, periodic, radius, tie_tol, numbers,
                             cand_d, cand_j, cand_img)
            if n_valid >= 0:
                break
            radius *= _GROW
        for m in range(n_valid):
            p = order[m]
            out_numbers[i, m] = numbers[cand_j[p]]
            out_dist[i, m] = cand_d[p]
            out_idx[i, m] = cand_j[p]
            for a in range(3):
                out_img[i, m, a] = cand_img[p, a]
        for m in range(n_valid, k):  # padding
            out_numbers[i, m] = 0
            out_dist[i, m] = np.inf
            out_idx[i, m] = -1
            for a in range(3):
                out_img[i, m, a] = 0
        out_counts[i] = n_valid


@njit(cache=True, parallel=True)
def _knn_all(lattices, frac, numbers, atom_ptr, pbc, k, tie_tol,
             out_numbers, out_dist, out_idx, out_img, out_counts):
    for s in prange(lattices.shape[0]):
        a0 = atom_ptr[s]
        a1 = atom_ptr[s + 1]
        _knn_structure(lattices[s], frac[a0:a1], numbers[a0:a1], pbc[s], k, tie_tol,
                       out_numbers[a0:a1], out_dist[a0:a1], out_idx[a0:a1],
                       out_img[a0:a1], out_counts[a0:a1])


def knn_batch(lattices: np.ndarray, frac_coords: np.ndarray, numbers: np.ndarray,
              atom_ptr: np.ndarray, pbc: np.ndarray, k: int, tie_tol: float,
              num_threads: int = 0) -> tuple[np.ndarray, ...]:
    """Neighbour lists of a validated batch (see `fastgap.neighbor_lists_batch`).

    Args:
        lattices: (S, 3, 3) float64 Å; frac_coords: (A, 3) float64; numbers: (A,) int32;
        atom_ptr: (S + 1,) int64; pbc: (S, 3) bool; k >= 1; tie_tol in Å;
        num_threads: Numba threads across structures, 0 = Numba's default.

    Returns:
        (numbers int16 (A, k), distances float64 (A, k) Å, indices int32 (A, k),
        images int32 (A, k, 3), counts int32 (A,)); no minimum-distance check here.
    """
    n_atoms = frac_coords.shape[0]
    # every row is written whole by the kernel (entries, then padding)
    out_numbers = np.empty((n_atoms, k), np.int16)
    out_dist = np.empty((n_atoms, k))
    out_idx = np.empty((n_atoms, k), np.int32)
    out_img = np.empty((n_atoms, k, 3), np.int32)
    out_counts = np.empty(n_atoms, np.int32)
    previous = numba.get_num_threads()
    if num_threads:
        numba.set_num_threads(min(num_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        _knn_all(lattices, frac_coords, numbers, atom_ptr, pbc, k, tie_tol,
                 out_numbers, out_dist, out_idx, out_img, out_counts)
    finally:
        numba.set_num_threads(previous)
    return out_numbers, out_dist, out_idx, out_img, out_counts
