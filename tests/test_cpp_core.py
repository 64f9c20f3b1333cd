"""Tests of the compiled k-NN core: its C++ tests (cmake + ctest) and the `_core` binding."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

_core = pytest.importorskip("fastgap._core", reason="fastgap._core is not built")

REPO = Path(__file__).resolve().parents[1]
TIE_TOL = 2.0**-15


def knn(lattice, frac, numbers, pbc=(True, True, True), k=19, num_threads=1, min_distance=0.5):
    """Run `_core.knn_batch` on one structure given as plain lists."""
    numbers = np.asarray(numbers, dtype=np.int32)
    return _core.knn_batch(
        np.ascontiguousarray(np.asarray(lattice, dtype=np.float64)[None]),
        np.ascontiguousarray(np.asarray(frac, dtype=np.float64).reshape(-1, 3)),
        numbers,
        np.array([0, numbers.size], dtype=np.int64),
        np.array([pbc], dtype=bool),
        k,
        num_threads,
        TIE_TOL,
        min_distance,
    )


def brute_force(lattice, frac, numbers, k, reach=4):
    """Contract order over a box of +-reach images; returns (numbers, distances) per atom."""
    lattice, frac = np.asarray(lattice, float), np.asarray(frac, float)
    images = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3)))
    out = []
    for i in range(len(numbers)):
        rows = []
        for j in range(len(numbers)):
            d = np.linalg.norm(((frac[j] + images) - frac[i]) @ lattice, axis=1)
            rows += [(d[t], numbers[j]) for t in range(len(images)) if j != i or images[t].any()]
        rows.sort()
        group, groups = 0, []
        for t in range(len(rows)):
            group += t > 0 and rows[t][0] - rows[t - 1][0] > TIE_TOL
            groups.append(group)
        order = sorted(range(len(rows)), key=lambda t: (groups[t], rows[t][1], rows[t][0]))[:k]
        out.append(([rows[t][1] for t in order], [rows[t][0] for t in order]))
    return out


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cpp_unit_tests_pass(tmp_path: Path) -> None:
    build = tmp_path / "build"
    configure = [
        "cmake", "-S", str(REPO), "-B", str(build), "-DFASTGAP_BUILD_PYTHON=OFF",
        "-DFASTGAP_BUILD_TESTS=ON", "-DCMAKE_BUILD_TYPE=Release",
    ]
    subprocess.run(configure, check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    result = subprocess.run(
        ["ctest", "--test-dir", str(build), "--output-on-failure"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("test_knn", "test_rows", "test_lstm"):  # the k-NN, row and LSTM cores
        assert f" {name} " in result.stdout, result.stdout


def test_shapes_and_dtypes() -> None:
    out = knn(np.eye(3) * 4.0, [[0, 0, 0], [0.5, 0.5, 0.5]], [11, 17], k=7)
    numbers, distances, indices, images, counts = out
    assert (numbers.dtype, numbers.shape) == (np.int16, (2, 7))
    assert (distances.dtype, distances.shape) == (np.float64, (2, 7))
    assert (indices.dtype, indices.shape) == (np.int32, (2, 7))
    assert (images.dtype, images.shape) == (np.int32, (2, 7, 3))
    assert (counts.dtype, counts.shape) == (np.int32, (2,))
    assert _core.TIE_TOL == TIE_TOL


def test_simple_cubic_shells() -> None:
    numbers, distances, indices, images, counts = knn(np.eye(3) * 3.0, [[0.2, 0.3, 0.4]], [29])
    np.testing.assert_allclose(distances[0, :6], 3.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(distances[0, 6:18], 3.0 * np.sqrt(2), rtol=0, atol=1e-12)
    np.testing.assert_allclose(distances[0, 18], 3.0 * np.sqrt(3), rtol=0, atol=1e-12)
    # A one-atom cell: every neighbour is one of its own periodic images.
    assert (indices == 0).all() and (numbers == 29).all() and counts[0] == 19
    assert not (images[0] == 0).all(axis=1).any()


def test_fcc_shells_and_truncated_tie_group() -> None:
    a = 3.6
    fcc = a * np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    _, distances, _, _, counts = knn(fcc, [[0, 0, 0]], [29])
    np.testing.assert_allclose(distances[0, :12], a / np.sqrt(2), rtol=0, atol=1e-12)
    np.testing.assert_allclose(distances[0, 12:18], a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(distances[0, 18], a * np.sqrt(1.5), rtol=0, atol=1e-12)
    assert counts[0] == 19


def test_padding_on_three_atom_molecule() -> None:
    frac = [[0.5, 0.5, 0.5], [0.6, 0.5, 0.5], [0.5, 0.62, 0.5]]
    numbers, distances, indices, images, counts = knn(np.eye(3) * 10, frac, [8, 1, 1], pbc=(0, 0, 0))
    assert counts.tolist() == [2, 2, 2]
    np.testing.assert_allclose(distances[0, :2], [1.0, 1.2], rtol=0, atol=1e-12)
    assert indices[0, :2].tolist() == [1, 2]
    assert (numbers[:, 2:] == 0).all() and np.isinf(distances[:, 2:]).all()
    assert (indices[:, 2:] == -1).all() and (images == 0).all()


def test_image_convention_with_unwrapped_input() -> None:
    lattice = np.array([[4.0, 0, 0], [1.0, 3.8, 0], [0.7, -0.4, 5.1]])
    frac = np.array([[-1.3, 2.2, 0.1], [3.45, -0.2, -2.6]])
    _, distances, indices, images, _ = knn(lattice, frac, [14, 8])
    for i in range(2):
        neighbour = frac[indices[i]] + images[i]  # (k, 3)
        d = np.linalg.norm((neighbour - frac[i]) @ lattice, axis=1)
        np.testing.assert_allclose(d, distances[i], rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_random_cells_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    if seed % 2 == 0:  # cubic cell, atoms on a quarter grid: many mixed-species tie groups
        lattice = np.eye(3) * rng.uniform(3.0, 5.0)
        frac = rng.integers(-4, 8, (3, 3)) / 4
    else:  # skewed triclinic cell, general positions outside [0, 1)
        lattice = np.diag(rng.uniform(3.0, 5.0, 3)) + np.triu(rng.uniform(-1.5, 1.5, (3, 3)), 1)
        frac = rng.uniform(-1, 2, (3, 3))
    numbers = rng.integers(1, 4, 3)
    try:
        got_numbers, got_distances, *_ = knn(lattice, frac, numbers, k=23)
    except ValueError as error:
        pytest.skip(f"random cell has coincident atoms: {error}")
    for i, (want_numbers, want_distances) in enumerate(brute_force(lattice, frac, numbers, 23)):
        np.testing.assert_allclose(got_distances[i], want_distances, rtol=0, atol=1e-9)
        assert got_numbers[i].tolist() == want_numbers


def test_threads_give_identical_results() -> None:
    rng = np.random.default_rng(1)
    n_structures = 30
    lattices = np.repeat(np.eye(3)[None] * 6.0, n_structures, axis=0)
    frac = rng.uniform(0, 1, (4 * n_structures, 3)) * 0.2 + np.tile(
        [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]], (n_structures, 1)
    )
    args = (
        lattices,
        frac,
        np.full(4 * n_structures, 6, dtype=np.int32),
        np.arange(0, 4 * n_structures + 1, 4, dtype=np.int64),
        np.ones((n_structures, 3), dtype=bool),
        19,
    )
    one = _core.knn_batch(*args, 1, TIE_TOL, 0.5)
    all_threads = _core.knn_batch(*args, 0, TIE_TOL, 0.5)
    for a, b in zip(one, all_threads):
        np.testing.assert_array_equal(a, b)


def test_coincident_atoms_raise_value_error() -> None:
    with pytest.raises(ValueError, match=r"structure 0: atoms 0 and 1 \(image \(0, 0, 0\)\) are 0\.03"):
        knn(np.eye(3) * 3, [[0, 0, 0], [0.01, 0, 0]], [1, 1])


def test_atom_close_to_own_image_raises() -> None:
    with pytest.raises(ValueError, match="atom 0 and its own image"):
        knn(np.eye(3) * 0.4, [[0, 0, 0]], [1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lattice": [[3, 0, 0], [0, 3, 0], [3, 3, 1e-9]]}, "lattice: singular or near-singular"),
        ({"lattice": [[np.nan, 0, 0], [0, 3, 0], [0, 0, 3]]}, "lattice: expected finite values"),
        ({"frac": [[np.inf, 0, 0]]}, "frac_coords: expected finite values"),
        ({"numbers": [0]}, r"numbers: expected atomic numbers in 1\.\.118"),
        ({"numbers": [119]}, r"numbers: expected atomic numbers in 1\.\.118"),
        ({"k": 0}, r"k: expected 1\.\."),
        ({"min_distance": -1.0}, "min_distance: expected a finite value >= 0"),
        ({"num_threads": -1}, "num_threads: expected >= 0"),
    ],
)
def test_invalid_input_raises_value_error(change: dict, message: str) -> None:
    kwargs = {"lattice": np.eye(3) * 3, "frac": [[0, 0, 0]], "numbers": [6]} | change
    with pytest.raises(ValueError, match=message):
        knn(**kwargs)


def test_bad_atom_ptr_and_shapes_raise_value_error() -> None:
    lattices, frac = np.eye(3)[None] * 3, np.zeros((2, 3))
    numbers, pbc = np.ones(2, dtype=np.int32), np.ones((1, 3), dtype=bool)
    with pytest.raises(ValueError, match="structure 0 has 0 atoms"):
        _core.knn_batch(lattices, frac, numbers, np.array([0, 0], np.int64), pbc, 19, 1, TIE_TOL, 0.5)
    with pytest.raises(ValueError, match=r"atom_ptr\[S\] == number of atoms 2"):
        _core.knn_batch(lattices, frac, numbers, np.array([0, 1], np.int64), pbc, 19, 1, TIE_TOL, 0.5)
    with pytest.raises(ValueError, match="pbc: expected shape"):
        _core.knn_batch(
            lattices, frac, numbers, np.array([0, 2], np.int64), np.ones((2, 3), dtype=bool),
            19, 1, TIE_TOL, 0.5,
        )


def _random_cell(rng: np.random.Generator, n_atoms: int, lattice: np.ndarray) -> tuple:
    """n_atoms at least 1 Å apart (rejection sampling) in `lattice`: (frac (n, 3), numbers)."""
    frac: list[np.ndarray] = []
    while len(frac) < n_atoms:
        f = rng.uniform(0, 1, 3)
        if all(_min_image_distance(lattice, f - g) >= 1.0 for g in frac):
            frac.append(f)
    return np.array(frac), rng.integers(1, 9, n_atoms).astype(np.int32)


def _min_image_distance(lattice: np.ndarray, delta: np.ndarray) -> float:
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3)))  # (27, 3)
    return float(np.linalg.norm((delta - np.round(delta) + shifts) @ lattice, axis=1).min())


def test_large_batch_matches_structure_by_structure() -> None:
    # 1,500 structures x 20 atoms: outputs of several MiB (allocated by the binding, owned
    # by NumPy); every structure's rows must equal a single-structure call.
    rng = np.random.default_rng(7)
    lattice = np.diag([6.0, 6.5, 7.0]) + np.triu(rng.uniform(-1.0, 1.0, (3, 3)), 1)
    frac, numbers = _random_cell(rng, 20, lattice)
    n_structures = 1500
    batch = _core.knn_batch(
        np.repeat(lattice[None], n_structures, axis=0),
        np.tile(frac, (n_structures, 1)),
        np.tile(numbers, n_structures),
        np.arange(0, 20 * n_structures + 1, 20, dtype=np.int64),
        np.ones((n_structures, 3), dtype=bool),
        19,
        1,
        TIE_TOL,
        0.5,
    )
    assert batch[1].nbytes >= 4 << 20
    single = knn(lattice, frac, numbers)
    for got, want in zip(batch, single):
        assert got.flags.writeable and got.flags.c_contiguous
        for s in (0, 777, n_structures - 1):
            assert got[20 * s : 20 * (s + 1)].tobytes() == want.tobytes()


@pytest.mark.parametrize("n_atoms", [30, 90])
def test_slab_with_vacuum_matches_reference(n_atoms: int) -> None:
    # The density estimate counts the vacuum, so the first search sphere holds far more
    # than k candidates (over the 64 ranked branch-free: the nth_element path).
    from fastgap.neighbors import neighbor_lists

    rng = np.random.default_rng(n_atoms)
    lattice = np.diag([9.0, 9.0, 60.0])
    frac, numbers = _random_cell(rng, n_atoms, np.diag([9.0, 9.0, 6.0]))
    frac[:, 2] *= 0.1
    got = neighbor_lists(lattice, frac, numbers, backend="cpp")
    want = neighbor_lists(lattice, frac, numbers, backend="reference")
    np.testing.assert_array_equal(got.numbers, want.numbers)
    np.testing.assert_array_equal(got.counts, want.counts)
    np.testing.assert_allclose(got.distances, want.distances, rtol=0, atol=1e-12)
