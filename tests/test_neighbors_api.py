"""Boundary validation and backend selection of the neighbour-list API."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import fastgap
from fastgap import neighbors
from fastgap.neighbors import (
    MAX_Z,
    MIN_DISTANCE,
    TIE_TOL,
    BackendUnavailableError,
    neighbor_lists,
    neighbor_lists_batch,
)

HAVE_CPP = importlib.util.find_spec("fastgap._core") is not None
BACKENDS = [
    "numba",
    "reference",
    pytest.param("cpp", marks=pytest.mark.skipif(not HAVE_CPP, reason="fastgap._core not built")),
]


def _batch(**overrides):
    """Two valid structures (rock salt, 2 atoms; simple cubic, 1 atom) as batch arguments."""
    args = {
        "lattices": np.stack([2.82 * (np.ones((3, 3)) - np.eye(3)), 3.0 * np.eye(3)]),
        "frac_coords": np.array([[0.0, 0, 0], [0.5, 0.5, 0.5], [0.1, 0.2, 0.3]]),
        "numbers": np.array([11, 17, 29]),
        "atom_ptr": np.array([0, 2, 3]),
    }
    args.update(overrides)
    return args


def test_constants_and_exports():
    assert TIE_TOL == 2.0**-15 and MIN_DISTANCE == 0.5 and MAX_Z == 118
    assert fastgap.neighbor_lists is neighbor_lists
    assert fastgap.neighbor_lists_batch is neighbor_lists_batch


def test_output_dtypes_and_shapes():
    nl = neighbor_lists_batch(**_batch(), k=5, backend="numba")
    assert nl.numbers.dtype == np.int16 and nl.numbers.shape == (3, 5)
    assert nl.distances.dtype == np.float64 and nl.indices.dtype == np.int32
    assert nl.images.dtype == np.int32 and nl.images.shape == (3, 5, 3)
    assert nl.counts.dtype == np.int32 and nl.mask.shape == (3, 5) and nl.mask.all()


def test_empty_batch():
    nl = neighbor_lists_batch(np.zeros((0, 3, 3)), np.zeros((0, 3)), np.zeros(0, int), [0],
                              k=3, backend="numba")
    assert nl.numbers.shape == (0, 3) and nl.counts.shape == (0,)


@pytest.mark.skipif(not HAVE_CPP, reason="fastgap._core not built")
def test_auto_is_cpp():
    auto = neighbor_lists_batch(**_batch(), backend="auto")
    cpp = neighbor_lists_batch(**_batch(), backend="cpp")
    np.testing.assert_array_equal(auto.indices, cpp.indices)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend: expected one of"):
        neighbor_lists_batch(**_batch(), backend="fortran")


@pytest.mark.parametrize("backend", ["auto", "cpp"])
def test_missing_extension_is_an_error(backend, monkeypatch):
    # simulate an installation without the compiled core: no silent fallback to numba
    monkeypatch.setattr(neighbors, "_cpp_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="fastgap._core is not built"):
        neighbor_lists_batch(**_batch(), backend=backend)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"k": 2.0}, TypeError, "k: expected an int"),
        ({"k": True}, TypeError, "k: expected an int"),
        ({"k": 0}, ValueError, r"k: expected k >= 1"),
        ({"num_threads": 1.5}, TypeError, "num_threads: expected an int"),
        ({"num_threads": -1}, ValueError, "num_threads: expected >= 0"),
        ({"lattices": np.full((2, 3, 3), "x")}, TypeError, "lattices: expected a real"),
        ({"lattices": np.zeros((2, 3, 4))}, ValueError, r"lattices: expected shape \(S, 3, 3\)"),
        ({"frac_coords": np.zeros((3, 2))}, ValueError, r"frac_coords: expected shape \(A, 3\)"),
        ({"numbers": np.array([11.0, 17.0, 29.0])}, TypeError, "numbers: expected an integer"),
        ({"numbers": np.array([11, 17])}, ValueError, r"numbers: expected shape \(3,\)"),
        ({"atom_ptr": np.array([0.0, 2.0, 3.0])}, TypeError, "atom_ptr: expected an integer"),
        ({"atom_ptr": np.array([0, 3])}, ValueError, r"atom_ptr: expected shape \(3,\)"),
        ({"atom_ptr": np.array([1, 2, 3])}, ValueError, "atom_ptr: expected to start at 0"),
        ({"atom_ptr": np.array([0, 2, 4])}, ValueError, "and end at 3"),
        ({"atom_ptr": np.array([0, 4, 3])}, ValueError, "non-decreasing.*structure 1"),
        ({"atom_ptr": np.array([0, 3, 3])}, ValueError, "structure 1 is empty"),
        ({"pbc": np.array([1, 1, 1])}, TypeError, "pbc: expected bool"),
        ({"pbc": np.ones((2, 2), bool)}, ValueError, r"pbc: expected shape"),
        ({"lattices": np.stack([np.eye(3), np.full((3, 3), np.nan)])}, ValueError,
         "lattices: structure 1 has NaN or inf"),
        ({"frac_coords": np.array([[0.0, 0, 0], [0.5, 0.5, 0.5], [0.1, np.inf, 0.3]])},
         ValueError, "frac_coords: structure 1, atom 0 has NaN or inf"),
        ({"numbers": np.array([11, 0, 29])}, ValueError,
         r"numbers: expected atomic numbers in 1..118, structure 0, atom 1 has 0"),
        ({"numbers": np.array([11, 17, 119])}, ValueError, "structure 1, atom 0 has 119"),
        ({"lattices": np.stack([np.eye(3), [[1, 0, 0], [0, 1, 0], [1, 1, 1e-7]]])},
         ValueError, "lattices: structure 1 is singular"),
    ],
)
def test_batch_validation(overrides, error, match):
    args = {"k": 3, "backend": "numba", **_batch()}
    args.update(overrides)
    with pytest.raises(error, match=match):
        neighbor_lists_batch(**args)


def test_singular_lattice_is_fine_without_pbc():
    args = _batch(lattices=np.stack([np.diag([5.0, 5.0, 0.0])] * 2))
    nl = neighbor_lists_batch(**args, k=3, pbc=False, backend="numba")
    assert nl.counts.tolist() == [1, 1, 0]


def test_per_structure_pbc_singular_check():
    lattices = np.stack([np.eye(3) * 3, np.diag([5.0, 5.0, 0.0])])
    with pytest.raises(ValueError, match="structure 1 is singular"):
        neighbor_lists_batch(**_batch(lattices=lattices), pbc=np.array([[False] * 3, [True] * 3]),
                             backend="numba")
    neighbor_lists_batch(**_batch(lattices=lattices), pbc=np.array([[True] * 3, [False] * 3]),
                         backend="numba")


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((np.eye(2), [[0, 0, 0]], [1]), ValueError, r"lattice: expected shape \(3, 3\)"),
        ((np.eye(3), np.zeros((0, 3)), np.zeros(0, int)), ValueError, "frac_coords: .*empty"),
        ((np.eye(3), [0.0, 0.0, 0.0], [1]), ValueError, r"frac_coords: expected shape \(N, 3\)"),
        ((np.eye(3) * 3, [[0, 0, 0]], ["Cu"]), TypeError, "numbers: expected an integer"),
    ],
)
def test_single_validation(args, error, match):
    with pytest.raises(error, match=match):
        neighbor_lists(*args, backend="numba")


def test_single_pbc_shape():
    with pytest.raises(ValueError, match="pbc: expected a bool or three bools"):
        neighbor_lists(np.eye(3) * 3, [[0, 0, 0]], [1], pbc=np.ones((1, 3), bool),
                       backend="numba")


@pytest.mark.parametrize("backend", BACKENDS)
def test_close_atoms(backend):
    frac = np.array([[0.0, 0, 0], [0.5, 0.5, 0.5], [0.1, 0.2, 0.3], [0.1, 0.2, 0.35]])
    args = _batch(frac_coords=frac, numbers=np.array([11, 17, 29, 29]), atom_ptr=[0, 2, 4])
    match = "structure 1" if backend == "cpp" else r"structure 1, atoms (0 and 1|1 and 0)"
    with pytest.raises(ValueError, match=match):
        neighbor_lists_batch(**args, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_atom_close_to_its_own_image(backend):
    match = "structure 0" if backend == "cpp" else "structure 0, atoms 0 and 0.*MIN_DISTANCE"
    with pytest.raises(ValueError, match=match):
        neighbor_lists(np.eye(3) * 0.4, [[0.0, 0, 0]], [1], backend=backend)
    neighbor_lists(np.eye(3) * 0.4, [[0.0, 0, 0]], [1], pbc=False, backend=backend)
