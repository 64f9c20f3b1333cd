"""Synthetic featurized batches with a learnable target, for tests and benchmarks.

Shaped like a store's `fastgap.features.FeaturizedBatch` (periodic "crystals" and padded
"molecules"), without neighbour lists computed from real cells.
"""

from __future__ import annotations

import numpy as np

from fastgap.features import FeaturizedBatch


def synthetic_featurized(
    n_structures: int,
    rng: np.random.Generator,
    *,
    k: int = 19,
    max_atoms: int = 12,
    max_z: int = 30,
    molecule_fraction: float = 0.0,
    with_indices: bool = True,
) -> FeaturizedBatch:
    """Random ``FeaturizedBatch`` with a learnable ``band_gap_eV`` (tests, benchmarks).

    Neighbour distances are sorted, 1.5..4.5 Å; a fraction of structures are "molecules"
    (no periodicity, fewer than k neighbours, padded). The gap is a smooth function of the
    composition and the mean first-neighbour distance, with about 30% zeros (metals).
    ``nbr_indices`` are random local indices (drawn last, so the other arrays do not depend
    on ``with_indices``); ``with_indices=False`` leaves them None, like a schema-1 store.
    """
    n_atoms = rng.integers(1, max_atoms + 1, size=n_structures)
    ptr = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
    n = int(ptr[-1])
    mol = rng.random(n_structures) < molecule_fraction
    numbers = rng.integers(1, max_z + 1, size=n).astype(np.uint8)
    nbr_numbers = rng.integers(1, max_z + 1, size=(n, k)).astype(np.uint8)
    nbr_dist = np.sort(rng.uniform(1.5, 4.5, size=(n, k)), axis=1).astype(np.float32)
    atom_mol = np.repeat(mol, n_atoms)
    counts = np.where(atom_mol, np.minimum(np.repeat(n_atoms, n_atoms) - 1, k), k)
    pad = np.arange(k)[None, :] >= counts[:, None]
    nbr_numbers[pad], nbr_dist[pad] = 0, 0.0
    owner = np.repeat(np.arange(n_structures), n_atoms)
    feat = np.bincount(owner, weights=numbers / max_z) / n_atoms  # mean scaled Z
    d1 = np.bincount(owner, weights=nbr_dist[:, 0]) / n_atoms  # mean first-neighbour distance
    gap = np.clip(8.0 * feat - 2.0 + np.sin(2.0 * d1), 0, None)
    lattice = np.repeat((np.eye(3) * 5.0)[None], n_structures, axis=0).astype(np.float32)
    frac = rng.random((n, 3)).astype(np.float32)
    nbr_indices = None
    if with_indices:
        size = np.repeat(n_atoms, n_atoms)[:, None]  # (A, 1) atoms in each atom's structure
        nbr_indices = np.floor(rng.random((n, k)) * size).astype(np.int32)
        nbr_indices[pad] = -1
    return FeaturizedBatch(
        ids=np.array([f"syn-{i}" for i in range(n_structures)], dtype=object),
        atom_ptr=ptr,
        lattice=lattice,
        pbc=np.repeat(~mol[:, None], 3, axis=1),
        numbers=numbers,
        frac_coords=frac,
        nbr_numbers=nbr_numbers,
        nbr_distances=nbr_dist,
        nbr_counts=counts.astype(np.uint8),
        properties={"band_gap_eV": gap, "formation_energy_eV_per_atom": -feat},
        sources=np.array(["synthetic"] * n_structures, dtype=object),
        nbr_indices=nbr_indices,
    )
