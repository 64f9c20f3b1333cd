"""Neighbour-list backends against the brute-force oracle, and invariances of every backend."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from fastgap.neighbors import TIE_TOL, NeighborList, neighbor_lists, neighbor_lists_batch


def _load_zoo():
    spec = importlib.util.spec_from_file_location("fastgap_test_zoo", Path(__file__).with_name("zoo.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


zoo = _load_zoo()
K = 19
HAVE_CPP = importlib.util.find_spec("fastgap._core") is not None
FAST = [
    "numba",
    pytest.param("cpp", marks=pytest.mark.skipif(not HAVE_CPP, reason="fastgap._core not built")),
]


@pytest.fixture(scope="module")
def zoo_batch() -> dict[str, np.ndarray]:
    return zoo.as_batch(zoo.zoo())


@pytest.fixture(scope="module")
def zoo_reference(zoo_batch) -> NeighborList:
    return neighbor_lists_batch(**zoo_batch, k=K, backend="reference")


def _tie_groups(nl: NeighborList) -> np.ndarray:
    """(A, k) tie-group id of each entry along its row (chained gaps > TIE_TOL)."""
    dist = np.where(nl.mask, nl.distances, 1e300)
    gaps = np.diff(dist, axis=1) > TIE_TOL
    return np.concatenate([np.zeros((len(dist), 1), int), np.cumsum(gaps, axis=1)], axis=1)


def _complete_group_members(nl: NeighborList, group: np.ndarray,
                            complete: np.ndarray) -> np.ndarray:
    """(4, M) (index, image) of entries in complete tie groups, canonically sorted."""
    rows, cols = np.nonzero(complete)
    idx, img = nl.indices[rows, cols], nl.images[rows, cols]
    order = np.lexsort((img[:, 2], img[:, 1], img[:, 0], idx, nl.numbers[rows, cols],
                        group[rows, cols], rows))
    return np.stack([idx, img[:, 0], img[:, 1], img[:, 2]])[:, order]


def assert_geometry(nl: NeighborList, batch: dict[str, np.ndarray]) -> None:
    """|frac[j] + image - frac[i]| L == distance; no self entry; (index, image) unique per row."""
    ptr, frac = batch["atom_ptr"], batch["frac_coords"]
    structure = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    rows, cols = np.nonzero(nl.mask)
    j = ptr[structure[rows]] + nl.indices[rows, cols]
    delta = frac[j] + nl.images[rows, cols] - frac[rows]
    cart = np.einsum("mi,mij->mj", delta, batch["lattices"][structure[rows]])
    np.testing.assert_allclose(np.linalg.norm(cart, axis=1), nl.distances[rows, cols],
                               rtol=0, atol=1e-9)
    local = rows - ptr[structure[rows]]
    self_entry = (nl.indices[rows, cols] == local) & (nl.images[rows, cols] == 0).all(axis=1)
    assert not self_entry.any()
    key = (((nl.indices.astype(np.int64) * 1000 + nl.images[..., 0] + 500) * 1000
            + nl.images[..., 1] + 500) * 1000 + nl.images[..., 2] + 500)
    key = np.sort(np.where(nl.mask, key, -1 - np.arange(key.shape[1])), axis=1)
    assert not (np.diff(key, axis=1) == 0).any()
    padding = ~nl.mask
    assert (nl.numbers[padding] == 0).all() and np.isinf(nl.distances[padding]).all()
    assert (nl.indices[padding] == -1).all() and (nl.images[padding] == 0).all()


def assert_same_lists(got: NeighborList, ref: NeighborList) -> None:
    """Sequences equal: counts, numbers, distances (1e-9 Å); (index, image) sets equal within
    every complete tie group of equal atomic number (a group cut by k may differ)."""
    np.testing.assert_array_equal(got.counts, ref.counts)
    np.testing.assert_array_equal(got.numbers, ref.numbers)
    np.testing.assert_allclose(got.distances, ref.distances, rtol=0, atol=1e-9)
    group = _tie_groups(ref)
    k = ref.numbers.shape[1]
    last = group[np.arange(len(group)), np.maximum(ref.counts - 1, 0)]
    complete = ref.mask & ((group < last[:, None]) | (ref.counts < k)[:, None])
    np.testing.assert_array_equal(_complete_group_members(got, group, complete),
                                  _complete_group_members(ref, group, complete))


def test_zoo_size():
    structures = zoo.zoo()
    assert len(structures) >= 50
    assert max(len(s.numbers) for s in structures) >= 500


def test_reference_geometry(zoo_batch, zoo_reference):
    assert_geometry(zoo_reference, zoo_batch)


@pytest.mark.parametrize("backend", FAST)
def test_backend_matches_reference(backend, zoo_batch, zoo_reference):
    got = neighbor_lists_batch(**zoo_batch, k=K, backend=backend)
    assert_same_lists(got, zoo_reference)
    assert_geometry(got, zoo_batch)


def test_numba_is_identical_to_reference(zoo_batch, zoo_reference):
    # same arithmetic in the same order: even a tie group cut by k selects the same entries
    got = neighbor_lists_batch(**zoo_batch, k=K, backend="numba")
    for name in ("numbers", "distances", "indices", "images", "counts"):
        np.testing.assert_array_equal(getattr(got, name), getattr(zoo_reference, name))


@pytest.mark.parametrize("k", [1, 4, 40])
@pytest.mark.parametrize("backend", FAST)
def test_other_k(backend, k):
    batch = zoo.as_batch(zoo.zoo(include_large=False))
    ref = neighbor_lists_batch(**batch, k=k, backend="reference")
    assert_same_lists(neighbor_lists_batch(**batch, k=k, backend=backend), ref)


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_single_equals_batch_and_threads(backend):
    structures = zoo.zoo(include_large=False)[::4]
    batch = zoo.as_batch(structures)
    whole = neighbor_lists_batch(**batch, backend=backend, num_threads=1)
    parts = [neighbor_lists(s.lattice, s.frac_coords, s.numbers, pbc=s.pbc, backend=backend)
             for s in structures]
    np.testing.assert_array_equal(whole.indices, np.concatenate([p.indices for p in parts]))
    np.testing.assert_array_equal(whole.distances, np.concatenate([p.distances for p in parts]))
    two = neighbor_lists_batch(**batch, backend=backend, num_threads=2)
    np.testing.assert_array_equal(two.images, whole.images)


def _by_name(name: str):
    return next(s for s in zoo.zoo(include_large=False) if s.name == name)


def _single(s, backend="reference", k=K) -> NeighborList:
    return neighbor_lists(s.lattice, s.frac_coords, s.numbers, pbc=s.pbc, k=k, backend=backend)


def test_reference_known_shells():
    fcc = _single(_by_name("fcc-3.61"))
    a = 3.61
    expected = [a / np.sqrt(2)] * 12 + [a] * 6 + [a * np.sqrt(1.5)]
    np.testing.assert_allclose(fcc.distances[0], expected, rtol=0, atol=1e-12)
    bcc = _single(_by_name("bcc-2.87"))
    a = 2.87
    expected = [a * np.sqrt(3) / 2] * 8 + [a] * 6 + [a * np.sqrt(2)] * 5
    np.testing.assert_allclose(bcc.distances[0], expected, rtol=0, atol=1e-12)
    cu3au = _single(_by_name("Cu3Au"))
    assert cu3au.numbers[0].tolist() == [29] * 12 + [79] * 6 + [29]
    assert cu3au.numbers[1].tolist() == [29] * 8 + [79] * 4 + [29] * 7


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_padding_for_molecules(backend):
    water = _single(_by_name("water"), backend)
    assert water.counts.tolist() == [2, 2, 2]
    assert water.mask.sum(axis=1).tolist() == [2, 2, 2]
    assert water.numbers[0, :2].tolist() == [1, 1] and water.numbers[1, :2].tolist() == [8, 1]
    assert (water.numbers[:, 2:] == 0).all() and np.isinf(water.distances[:, 2:]).all()
    assert (water.indices[:, 2:] == -1).all() and (water.images == 0).all()
    lone = _single(_by_name("single-atom"), backend)
    assert lone.counts.tolist() == [0] and not lone.mask.any()
    shifted = _single(_by_name("water-outside-box"), backend)
    np.testing.assert_allclose(shifted.distances, water.distances, rtol=0, atol=1e-9)


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_mixed_pbc(backend):
    slab2d, slab3d = _single(_by_name("slab-2d"), backend), _single(_by_name("slab-3d"), backend)
    assert (slab2d.images[..., 2] == 0).all()
    # 20 Å of vacuum is farther than any 19th neighbour: the 2D and 3D lists agree
    np.testing.assert_array_equal(slab2d.numbers, slab3d.numbers)
    np.testing.assert_allclose(slab2d.distances, slab3d.distances, rtol=0, atol=1e-9)
    chain = _single(_by_name("chain-1d"), backend)
    assert (chain.counts == K).all() and (chain.images[..., 1:] == 0).all()


INVARIANCE_BACKENDS = ["numba", "reference", *FAST[1:]]


def _invariance_structures(backend: str) -> list:
    structures = zoo.zoo(include_large=False)
    # the oracle is slow: check it on a varied subset
    return structures[::5] if backend == "reference" else structures


def _run(structures, backend: str, **overrides) -> NeighborList:
    batch = {**zoo.as_batch(structures), **overrides}
    return neighbor_lists_batch(**batch, k=K, backend=backend)


def assert_same_sequences(got: NeighborList, ref: NeighborList) -> None:
    np.testing.assert_array_equal(got.counts, ref.counts)
    np.testing.assert_array_equal(got.numbers, ref.numbers)
    np.testing.assert_allclose(got.distances, ref.distances, rtol=0, atol=1e-9)


@pytest.mark.parametrize("backend", INVARIANCE_BACKENDS)
def test_rotation_and_translation(backend):
    structures = _invariance_structures(backend)
    batch = zoo.as_batch(structures)
    ref = _run(structures, backend)
    rng = np.random.default_rng(0)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation = q * np.sign(np.diag(r))
    rotated = _run(structures, backend, lattices=batch["lattices"] @ rotation.T)
    assert_same_lists(rotated, ref)
    shift = rng.uniform(-2, 2, (len(structures), 3))
    per_atom = np.repeat(shift, np.diff(batch["atom_ptr"]), axis=0)
    translated = _run(structures, backend, frac_coords=batch["frac_coords"] + per_atom)
    assert_same_sequences(translated, ref)


@pytest.mark.parametrize("backend", INVARIANCE_BACKENDS)
def test_wrapping(backend):
    structures = _invariance_structures(backend)
    batch = zoo.as_batch(structures)
    ref = _run(structures, backend)
    rng = np.random.default_rng(1)
    periodic = np.repeat(batch["pbc"], np.diff(batch["atom_ptr"]), axis=0)
    jumps = rng.integers(-3, 4, batch["frac_coords"].shape) * periodic
    wrapped = _run(structures, backend, frac_coords=batch["frac_coords"] + jumps)
    assert_same_sequences(wrapped, ref)
    assert_geometry(wrapped, {**batch, "frac_coords": batch["frac_coords"] + jumps})


@pytest.mark.parametrize("backend", INVARIANCE_BACKENDS)
def test_atom_permutation(backend):
    structures = _invariance_structures(backend)
    rng = np.random.default_rng(2)
    perms = [rng.permutation(len(s.numbers)) for s in structures]
    permuted = [zoo.ZooStructure(s.name, s.lattice, s.frac_coords[p], s.numbers[p], s.pbc)
                for s, p in zip(structures, perms)]
    ref, got = _run(structures, backend), _run(permuted, backend)
    ptr = zoo.as_batch(structures)["atom_ptr"]
    old_rows = np.concatenate([start + p for start, p in zip(ptr[:-1], perms)])
    assert_same_sequences(got, NeighborList(ref.numbers[old_rows], ref.distances[old_rows],
                                            ref.indices[old_rows], ref.images[old_rows],
                                            ref.counts[old_rows]))


@pytest.mark.parametrize("backend", INVARIANCE_BACKENDS)
def test_supercell(backend):
    structures = [s for s in _invariance_structures(backend) if s.periodic]
    offsets = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    supercells = [zoo.ZooStructure(s.name, 2 * s.lattice,
                                   ((s.frac_coords[None] + offsets) / 2).reshape(-1, 3),
                                   np.tile(s.numbers, 8)) for s in structures]
    ref, got = _run(structures, backend), _run(supercells, backend)
    ptr = zoo.as_batch(structures)["atom_ptr"]
    # supercell atom (copy t, atom i) has the neighbour sequence of primitive atom i
    rows = np.concatenate([np.tile(np.arange(a, b), 8) for a, b in itertools.pairwise(ptr)])
    assert_same_sequences(got, NeighborList(ref.numbers[rows], ref.distances[rows],
                                            ref.indices[rows], ref.images[rows],
                                            ref.counts[rows]))


@pytest.mark.parametrize("backend", FAST)
def test_large_skewed_supercells(backend):
    # 6x6x6 supercells (>= 216 atoms) of skewed, hcp and random cells: the numba backend's
    # cell-list path must give each atom the sequence of its primitive-cell atom
    structures = [s for s in zoo.zoo(include_large=False)
                  if s.name.startswith(("triclinic", "random-1", "hcp"))]
    rep = 6
    offsets = np.stack(np.meshgrid(*[np.arange(rep)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    big = [zoo.ZooStructure(s.name, rep * s.lattice,
                            ((s.frac_coords[None] + offsets) / rep).reshape(-1, 3),
                            np.tile(s.numbers, rep**3)) for s in structures]
    ref, got = _run(structures, "reference"), _run(big, backend)
    ptr = zoo.as_batch(structures)["atom_ptr"]
    rows = np.concatenate([np.tile(np.arange(a, b), rep**3) for a, b in itertools.pairwise(ptr)])
    assert_same_sequences(got, NeighborList(ref.numbers[rows], ref.distances[rows],
                                            ref.indices[rows], ref.images[rows],
                                            ref.counts[rows]))
    assert_geometry(got, zoo.as_batch(big))
