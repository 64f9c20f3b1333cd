"""Bond-angle features of every neighbour-list entry (``ModelConfig.angle_bins``).

The design's entries carry (element, distance) only: an atom's list says how far its
neighbours are, not how they sit around it. This module gives every entry j of atom i's
list a fixed-length angular signature, the distribution of the angles j-i-m over the other
atoms m of the list's shell:

    a_j[b] = log(1 + sum_m w_m * exp(-((cos(theta_jim) - c_b) / s)^2)),
    w_m = (d_1 / d_m)^2,  c_b = -1 + 2 b / (B - 1),  s = 2 / (B - 1),

with d_1 the nearest-neighbour distance of atom i and B = ``bins``. The centre entry
(column 0) is all zeros.

The shell of atom i is every atom (with its periodic images) at a distance up to the last
entry of i's list plus ``SHELL_TOL``: when the 19th neighbour falls inside a shell of equal
distances (fcc: 24 atoms at the third distance), the whole shell is used, not the part of
it that the list's tie-break kept, so the signatures do not depend on that tie-break.
The list is recomputed (same contract order) with a larger k. Inside a run of it (consecutive
entries of one element whose distances step by at most ``SHELL_TOL``, which holds every tie
group, whose members the list orders by atom index), the entries are re-sorted by their
signatures (lexicographically, rounded to ``SORT_STEP``); a run that the list cuts at its
last entry is sorted whole, over the shell, and its first entries are kept. The result does
not depend on atom order, origin, orientation or supercell (tested), and
symmetry-equivalent atoms get equal rows.

The shells come from the neighbour-list core (``fastgap.neighbors``) with a larger k; the
signatures from a Numba kernel, run on Python threads over ranges of structures.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from fastgap.neighbors import neighbor_lists_batch

if TYPE_CHECKING:
    from fastgap.features import FeaturizedBatch

SHELL_TOL = 2e-4  # Å: shell and tie-run tolerance (stored distances are float32)
SORT_STEP = 1e-4  # signatures inside a tie group are ordered after rounding to this step
_FIRST_K = 24  # neighbours asked for first; doubled for structures whose shell is not closed
_MAX_K = 3072  # the largest k tried: a longer tie shell contributes its first _MAX_K atoms
_MATCH_TOL = 1e-3  # Å: stored and recomputed list distances (float32 coordinates) agree to this
_MISMATCH = "its stored neighbour lists do not match its coordinates; re-featurize the structures"


@njit(cache=True)
def _exp_small(x: float) -> float:
    """exp(x) for |x| <= 0.5 to a relative 3e-9 (Taylor to x^9: no libm call)."""
    return 1.0 + x * (1.0 + x * (1.0 / 2 + x * (1.0 / 6 + x * (1.0 / 24 + x * (
        1.0 / 120 + x * (1.0 / 720 + x * (1.0 / 5040 + x * (1.0 / 40320 + x / 362880))))))))


@njit(cache=True)
def _gaussians(cos: float, bins: int, steps: np.ndarray, g: np.ndarray) -> None:
    """g[b] = exp(-((cos - c_b) / s)^2) for every bin b, without a libm exp: with
    z = (cos + 1) / s, b0 the bin nearest z and u = z - b0 (|u| <= 1/2),
    g[b0 +- (t + 1)] = g[b0 +- t] * e^(+-1) * steps[t], where e = exp(u)^2 = exp(2 u) and
    steps[t] = exp(-2 t - 1)."""
    z = (cos + 1.0) * (bins - 1) / 2.0
    b0 = min(max(int(np.rint(z)), 0), bins - 1)
    u = z - b0
    g[b0] = _exp_small(-u * u)
    e = _exp_small(u) ** 2
    for t in range(bins - 1 - b0):
        g[b0 + t + 1] = g[b0 + t] * e * steps[t]
    inv = _exp_small(-u) ** 2
    for t in range(b0):
        g[b0 - t - 1] = g[b0 - t] * inv * steps[t]


@njit(cache=True)
def _signatures(vec: np.ndarray, dist: np.ndarray, n: int, bins: int) -> np.ndarray:
    """(n, bins) signatures of the first n shell atoms (vectors (n, 3) Å, distances (n,))."""
    out = np.zeros((n, bins))
    if n == 0:
        return out
    steps = np.exp(-2.0 * np.arange(bins) - 1.0)
    g = np.empty(bins)
    unit = np.empty((n, 3))
    w = np.empty(n)
    for j in range(n):
        inv = 1.0 / dist[j]
        unit[j, 0] = vec[j, 0] * inv
        unit[j, 1] = vec[j, 1] * inv
        unit[j, 2] = vec[j, 2] * inv
        r = dist[0] * inv
        w[j] = r * r
    for j in range(n):
        for m in range(j + 1, n):
            cos = unit[j, 0] * unit[m, 0] + unit[j, 1] * unit[m, 1] + unit[j, 2] * unit[m, 2]
            _gaussians(min(max(cos, -1.0), 1.0), bins, steps, g)
            for b in range(bins):
                out[j, b] += w[m] * g[b]
                out[m, b] += w[j] * g[b]
    for j in range(n):
        for b in range(bins):
            out[j, b] = np.log1p(out[j, b])
    return out


@njit(cache=True)
def _less(sig: np.ndarray, p: int, q: int) -> bool:
    """Lexicographic order of signature rows p and q after rounding to SORT_STEP."""
    for b in range(sig.shape[1]):
        a = np.rint(sig[p, b] / SORT_STEP)
        c = np.rint(sig[q, b] / SORT_STEP)
        if a != c:
            return a < c
    return False


@njit(cache=True)
def _atom(i, s, lattices, frac, ptr, big_n, big_d, big_j, big_img, big_count,
          nbr_numbers, nbr_distances, nbr_counts, bins, out):
    """Fill ``out[i]`` (1 + k, bins) from atom i's recomputed list (``big_*``, contract
    order); return 0, or 1 if that list has fewer shell atoms than the stored one."""
    count = nbr_counts[i]
    if count == 0:
        return 0
    last = nbr_distances[i, count - 1] + SHELL_TOL
    n = 0
    while n < big_count[i] and big_d[i, n] <= last:
        n += 1
    vec = np.empty((n, 3))
    a0 = ptr[s]
    for m in range(n):
        j = a0 + big_j[i, m]
        f0 = frac[j, 0] + big_img[i, m, 0] - frac[i, 0]
        f1 = frac[j, 1] + big_img[i, m, 1] - frac[i, 1]
        f2 = frac[j, 2] + big_img[i, m, 2] - frac[i, 2]
        for ax in range(3):
            vec[m, ax] = f0 * lattices[s, 0, ax] + f1 * lattices[s, 1, ax] + f2 * lattices[s, 2, ax]
    sig = _signatures(vec, big_d[i], n, bins)
    if n < count:
        return 1
    order = np.arange(n)
    p = 0
    while p < count:
        q = p + 1  # a run: entries p..q-1 of one element at chained distances
        while q < n and big_n[i, q] == big_n[i, p] and big_d[i, q] - big_d[i, q - 1] <= SHELL_TOL:
            q += 1
        for x in range(p + 1, q):  # insertion sort of the run by signature
            y = x
            while y > p and _less(sig, order[y], order[y - 1]):
                order[y], order[y - 1] = order[y - 1], order[y]
                y -= 1
        p = q
    for p in range(count):
        for b in range(bins):
            out[i, 1 + p, b] = sig[order[p], b]
    return 0


@njit(nogil=True, cache=True)
def _fill(first, stop, lattices, frac, ptr, big_n, big_d, big_j, big_img, big_count,
          nbr_numbers, nbr_distances, nbr_counts, bins, out, status):
    """Structures first..stop-1; without the GIL, so threads can run disjoint ranges."""
    for s in range(first, stop):
        for i in range(ptr[s], ptr[s + 1]):
            status[s] |= _atom(i, s, lattices, frac, ptr, big_n, big_d, big_j, big_img,
                               big_count, nbr_numbers, nbr_distances, nbr_counts, bins, out)


def _in_threads(n_structures: int, ptr: np.ndarray, num_threads: int, run) -> None:
    """``run(first, stop)`` over ranges of about equal atom counts, on ``num_threads``
    threads (0 = all cores). Python threads, not a Numba thread pool: those spin-wait
    beside torch's threads in a training process."""
    threads = num_threads or os.cpu_count() or 1
    if threads == 1 or n_structures < 2:
        run(0, n_structures)
        return
    bounds = np.searchsorted(ptr, np.linspace(0, ptr[-1], 4 * threads + 1)[1:-1])
    edges = np.unique(np.concatenate([[0], bounds, [n_structures]]))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda k: run(int(edges[k]), int(edges[k + 1])), range(len(edges) - 1)))


def entry_angles(featurized: FeaturizedBatch, bins: int, *, num_threads: int = 0) -> np.ndarray:
    """(A, 1 + k, bins) float32 angle signatures of every entry (module doc), column 0 zero.

    Args:
        featurized: structures with their stored lists (``nbr_numbers``, ``nbr_distances``,
            ``nbr_counts``); the shells are recomputed from ``lattice`` / ``frac_coords``.
        bins: Gaussians over cos(angle) in [-1, 1], >= 2.
        num_threads: threads for the neighbour lists and the signatures, 0 = all cores.

    Raises:
        ValueError: ``bins`` < 2, or a stored list that its structure's coordinates do not
            give (a store written from other coordinates), naming the structure.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins: expected an integer >= 2, got {bins!r}")
    ptr = np.asarray(featurized.atom_ptr, dtype=np.int64)
    pending = np.flatnonzero(np.diff(ptr) > 0)
    if not len(pending):
        return np.zeros((featurized.n_atoms, 1 + featurized.k, int(bins)), dtype=np.float32)
    _, out, closed = _shells(featurized, pending, _FIRST_K, int(bins), num_threads)  # all atoms
    pending, big_k = pending[~closed], 2 * _FIRST_K
    while len(pending):  # structures whose shells a list of big_k neighbours does not close
        atoms, sub_out, closed = _shells(featurized, pending, big_k, int(bins), num_threads)
        done = np.repeat(closed, np.diff(ptr)[pending])
        out[atoms[done]] = sub_out[done]
        pending = pending[~closed]
        big_k *= 2
    return out


def _shells(featurized: FeaturizedBatch, structures: np.ndarray, big_k: int, bins: int,
            num_threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over ``structures`` with lists of ``big_k`` neighbours.

    Returns their atoms (A', ) int64, the signatures (A', 1 + k, bins) float32 and (S',) bool
    whether each structure's shells were closed (its signatures are final).
    """
    ptr = np.asarray(featurized.atom_ptr, dtype=np.int64)
    counts = np.diff(ptr)[structures]
    atoms = np.repeat(ptr[structures] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    sub_ptr = np.concatenate([[0], np.cumsum(counts)])
    frac = np.asarray(featurized.frac_coords, dtype=np.float64)[atoms]
    lattices = np.asarray(featurized.lattice, dtype=np.float64)[structures]
    lists = neighbor_lists_batch(
        lattices, frac, np.asarray(featurized.numbers)[atoms], sub_ptr, k=big_k,
        pbc=np.asarray(featurized.pbc, dtype=bool)[structures], num_threads=num_threads,
    )  # fmt: skip
    k = featurized.k
    nbr_d = np.asarray(featurized.nbr_distances)[atoms]
    c = np.asarray(featurized.nbr_counts, dtype=np.int64)[atoms]
    off = (np.arange(k)[None, :] < c[:, None]) & ~(np.abs(lists.distances[:, :k] - nbr_d)
                                                   <= _MATCH_TOL)
    if off.any():
        _mismatch(featurized, structures, sub_ptr, int(np.flatnonzero(off.any(axis=1))[0]))
    last = np.where(c > 0, nbr_d[np.arange(len(c)), np.maximum(c - 1, 0)], -np.inf) + SHELL_TOL
    closed_atom = (lists.counts < big_k) | (lists.distances[:, -1] > last)
    closed = np.logical_and.reduceat(closed_atom, sub_ptr[:-1])  # (S',)
    if big_k >= _MAX_K:
        closed[:] = True  # a shell this large: the first _MAX_K atoms of it are used
    sub_out = np.zeros((len(atoms), 1 + k, bins), dtype=np.float32)
    status = np.zeros(len(structures), dtype=np.int64)
    nbr_n = np.asarray(featurized.nbr_numbers)[atoms]
    _in_threads(len(structures), sub_ptr, num_threads, lambda a, b: _fill(
        a, b, lattices, frac, sub_ptr, lists.numbers, lists.distances, lists.indices,
        lists.images, lists.counts, nbr_n, nbr_d, c, bins, sub_out, status))
    bad = np.flatnonzero(closed & (status != 0))
    if len(bad):
        _mismatch(featurized, structures, sub_ptr, int(sub_ptr[bad[0]]))
    return atoms, sub_out, closed


def _mismatch(featurized: FeaturizedBatch, structures: np.ndarray, sub_ptr: np.ndarray,
              atom: int) -> None:
    s = int(structures[np.searchsorted(sub_ptr, atom, side="right") - 1])
    raise ValueError(f"structure {s} ({featurized.ids[s]}): {_MISMATCH}")
