"""The `Structure` record: validation branches and conversions (pymatgen, ASE, Cartesian)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastgap.structures import (
    Structure,
    atomic_numbers,
    from_ase,
    from_cartesian,
    from_pymatgen,
    make_structure,
)

CUBIC = np.eye(3) * 4.0
TWO_ATOMS = [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]


def test_make_structure_builds_canonical_dtypes() -> None:
    s = make_structure("x", CUBIC.tolist(), TWO_ATOMS, [11, 17], properties={"gap_eV": 1})
    assert s.lattice.dtype == np.float64 and s.frac_coords.shape == (2, 3)
    assert s.numbers.dtype == np.int64 and s.numbers.tolist() == [11, 17]
    assert s.pbc == (True, True, True) and s.properties == {"gap_eV": 1.0}
    assert s.n_atoms == 2
    np.testing.assert_allclose(s.cart_coords[1], [2.0, 2.0, 2.0], rtol=0, atol=1e-12)


def test_properties_numeric_bool_missing_and_text() -> None:
    props = {"a": 2, "b": True, "c": None, "d": "text", "e": [1, 2], "f": np.float32(0.5)}
    s = make_structure("x", CUBIC, TWO_ATOMS, [1, 1], properties=props)
    assert set(s.properties) == {"a", "b", "c", "f"}
    assert s.properties["a"] == 2.0 and s.properties["b"] == 1.0 and s.properties["f"] == 0.5
    assert math.isnan(s.properties["c"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"id": ""}, TypeError, "id: expected a non-empty str"),
        ({"lattice": np.eye(2)}, ValueError, r"lattice: expected shape \(3, 3\)"),
        ({"frac_coords": [[0.0, 0.0]]}, ValueError, r"frac_coords: expected shape \(N, 3\)"),
        ({"numbers": [11]}, ValueError, r"frac_coords: expected \(1, 3\) to match numbers"),
        ({"numbers": [], "frac_coords": []}, ValueError, "expected at least one atom"),
        ({"numbers": [1.0, 2.0]}, TypeError, "numbers: expected integer atomic numbers"),
        ({"numbers": [0, 1]}, ValueError, "expected atomic numbers 1..118, got 0"),
        ({"numbers": [1, 119]}, ValueError, "expected atomic numbers 1..118, got 119"),
        ({"lattice": np.full((3, 3), np.nan)}, ValueError, "lattice: expected finite"),
        (
            {"frac_coords": [[0, 0, np.inf], [0.5, 0.5, 0.5]]},
            ValueError,
            "frac_coords: expected finite",
        ),
        ({"lattice": [[1, 0, 0], [2, 0, 0], [0, 0, 1]]}, ValueError, "non-singular"),
        ({"lattice": [[1, 0, 0], [0, 0, 0], [0, 0, 1]]}, ValueError, "non-singular"),
        ({"frac_coords": [[0, 0, 0], [1.0, 0, 0]]}, ValueError, "atoms 0 and 1 are at the same"),
        ({"frac_coords": [["a", 0, 0], [0.5, 0, 0]]}, ValueError, "expected numeric arrays"),
    ],
)
def test_make_structure_rejects(kwargs: dict, error: type, match: str) -> None:
    args = {"id": "x", "lattice": CUBIC, "frac_coords": TWO_ATOMS, "numbers": [11, 17]}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        make_structure(**args)


def test_validate_rejects_wrong_types_directly() -> None:
    s = make_structure("x", CUBIC, TWO_ATOMS, [11, 17])
    s.numbers = s.numbers.astype(np.int32)
    with pytest.raises(TypeError, match="numbers: expected dtype int64, got int32"):
        s.validate()
    s.numbers, s.lattice = s.numbers.astype(np.int64), s.lattice.tolist()
    with pytest.raises(TypeError, match="lattice: expected a numpy array, got list"):
        s.validate()
    s.lattice, s.pbc = CUBIC.copy(), [True, True, True]
    with pytest.raises(TypeError, match="pbc: expected a tuple of three bools"):
        s.validate()


def test_duplicate_positions_wrap_only_along_periodic_axes() -> None:
    frac = [[0.0, 0.2, 0.2], [1.0, 0.2, 0.2]]
    with pytest.raises(ValueError, match="same position"):
        make_structure("x", CUBIC, frac, [1, 1], pbc=True)
    s = make_structure("x", CUBIC, frac, [1, 1], pbc=(False, True, True))
    assert s.n_atoms == 2


def test_atomic_numbers_rejects_dummy_and_unknown() -> None:
    assert atomic_numbers(["H", "Og"]).tolist() == [1, 118]
    with pytest.raises(ValueError, match="expected element symbols H..Og, got 'X'"):
        atomic_numbers(["Si", "X"])
    with pytest.raises(ValueError, match="got 3"):
        atomic_numbers([3])


def test_from_cartesian_molecule_box() -> None:
    pos = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    s = from_cartesian("m", pos, [1, 1], padding=5.0)
    assert s.pbc == (False, False, False)
    np.testing.assert_allclose(np.diag(s.lattice), [11.0, 10.0, 10.0], rtol=0, atol=1e-12)
    # positions are kept up to a translation that puts every atom inside the box
    np.testing.assert_allclose(s.cart_coords - s.cart_coords[0], pos, rtol=0, atol=1e-12)
    assert (s.frac_coords > 0).all() and (s.frac_coords < 1).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"positions": [[0.0, 0.0]]}, r"positions: expected shape \(N, 3\)"),
        ({"positions": [[np.nan, 0.0, 0.0]]}, "positions: expected finite"),
        ({"positions": [["a", 0, 0]]}, "positions: expected a numeric"),
        ({"pbc": True}, "pbc: a periodic structure needs a lattice"),
        ({"padding": 0.0}, "padding: expected a positive length"),
        ({"lattice": np.eye(2)}, r"lattice: expected shape \(3, 3\)"),
        ({"lattice": np.zeros((3, 3))}, "non-singular"),
    ],
)
def test_from_cartesian_rejects(kwargs: dict, match: str) -> None:
    args = {"id": "m", "positions": [[0.0, 0.0, 0.0]], "numbers": [1]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        from_cartesian(**args)


def test_from_cartesian_periodic_matches_fractional() -> None:
    lattice = np.array([[3.0, 0.0, 0.0], [1.0, 3.0, 0.0], [0.5, 0.5, 4.0]])
    frac = np.array([[0.1, 0.2, 0.3], [0.6, 0.7, 0.8]])
    s = from_cartesian("p", frac @ lattice, [14, 8], lattice=lattice)
    np.testing.assert_allclose(s.frac_coords, frac, rtol=0, atol=1e-12)
    assert s.pbc == (True, True, True)


def test_pymatgen_round_trip() -> None:
    s = make_structure(
        "x", [[4, 0, 0], [1, 4, 0], [0, 0, 5]], TWO_ATOMS, [11, 17], properties={"gap_eV": 2.0}
    )
    pmg = s.to_pymatgen()
    back = from_pymatgen(pmg, "x", "mem")
    np.testing.assert_array_equal(back.lattice, s.lattice)
    np.testing.assert_array_equal(back.frac_coords, s.frac_coords)
    assert back.numbers.tolist() == [11, 17] and back.properties == {"gap_eV": 2.0}
    assert back.source == "mem"


def test_pymatgen_molecule_and_rejections() -> None:
    from pymatgen.core import DummySpecies, Lattice, Molecule
    from pymatgen.core import Structure as PmgStructure

    mol = Molecule(["O", "H", "H"], [[0, 0, 0.12], [0, 0.76, -0.48], [0, -0.76, -0.48]])
    s = from_pymatgen(mol, "water")
    assert s.pbc == (False, False, False) and s.numbers.tolist() == [8, 1, 1]
    back = s.to_pymatgen()
    np.testing.assert_allclose(
        back.cart_coords - back.cart_coords[0],
        mol.cart_coords - mol.cart_coords[0],
        rtol=0,
        atol=1e-12,
    )
    disordered = PmgStructure(Lattice.cubic(3.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="disorder: partially occupied sites"):
        from_pymatgen(disordered, "d")
    dummy = PmgStructure(Lattice.cubic(3.0), [DummySpecies("X")], [[0, 0, 0]])
    with pytest.raises(ValueError, match="species: dummy species 'X0\\+' has no atomic number"):
        from_pymatgen(dummy, "d")


def test_from_ase_periodic_molecule_and_partial_cell() -> None:
    from ase import Atoms
    from ase.build import bulk

    si = bulk("Si", "diamond", a=5.43)
    s = from_ase(si, "si")
    np.testing.assert_allclose(s.cart_coords, si.positions, rtol=0, atol=1e-12)
    assert s.pbc == (True, True, True) and s.numbers.tolist() == [14, 14]
    mol = from_ase(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]), "h2")
    assert mol.pbc == (False, False, False)
    with pytest.raises(ValueError, match="pbc: a periodic structure needs a cell"):
        from_ase(Atoms("H", positions=[[0, 0, 0]], pbc=True), "h")
    slab = Atoms("H", positions=[[0, 0, 0]], cell=[[2, 0, 0], [0, 2, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="non-singular"):
        from_ase(slab, "slab")


def test_structure_validate_returns_self() -> None:
    s = Structure("x", CUBIC.copy(), np.zeros((1, 3)), np.array([1]))
    assert s.validate() is s
