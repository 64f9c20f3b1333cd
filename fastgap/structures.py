"""The canonical structure record every reader produces and every later stage consumes.

`make_structure` is the one validating constructor; `from_cartesian`, `from_pymatgen` and
`from_ase` convert other representations through it. Validation raises ``ValueError`` (or
``TypeError`` for a wrong type) naming the field, what was expected and what arrived; the
readers turn those errors into `Reject` records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# fmt: off
ELEMENTS: tuple[str, ...] = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S",
    "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga",
    "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd",
    "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm",
    "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os",
    "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa",
    "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg",
    "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
)
# fmt: on
ATOMIC_NUMBERS: dict[str, int] = {symbol: z for z, symbol in enumerate(ELEMENTS, start=1)}

#: Padding (Å) between a molecule's atoms and the faces of the box built around it.
MOLECULE_PADDING = 10.0
#: Lattices with ``|det| < SINGULAR_TOL * |a| |b| |c|`` are singular (as in the k-NN contract).
SINGULAR_TOL = 1e-6
#: Fractional coordinates are compared on this grid to find exactly duplicated positions.
DUPLICATE_GRID = 1e-6


@dataclass(eq=False)
class Structure:
    """One crystal or molecule.

    Attributes:
        id: unique identifier (JSON-lines ``id``; a file's name without extension).
        lattice: (3, 3) float64, Å; rows are the lattice vectors a, b, c. For a molecule
            (``pbc`` all False) a box around the atoms, so that fractional coordinates exist.
        frac_coords: (N, 3) float64, fractional coordinates (not necessarily wrapped).
        numbers: (N,) int64 atomic numbers, 1..118.
        pbc: periodicity along a, b, c.
        properties: name -> value (float; NaN where unknown). Units are in the names.
        source: where the record came from (file path, archive member, JSON-lines line).
    """

    id: str
    lattice: np.ndarray
    frac_coords: np.ndarray
    numbers: np.ndarray
    pbc: tuple[bool, bool, bool] = (True, True, True)
    properties: dict[str, float] = field(default_factory=dict)
    source: str = ""

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def cart_coords(self) -> np.ndarray:
        """(N, 3) float64 Cartesian positions in Å."""
        return self.frac_coords @ self.lattice

    def validate(self) -> Structure:
        """Check shapes, dtypes, finiteness, atomic numbers, the lattice and duplicates.

        Returns ``self`` so that it chains; raises ``ValueError``/``TypeError`` naming the field.
        """
        if not isinstance(self.id, str) or not self.id:
            raise TypeError(f"id: expected a non-empty str, got {self.id!r}")
        _check_array("lattice", self.lattice, np.float64, (3, 3))
        _check_array("frac_coords", self.frac_coords, np.float64, (None, 3))
        _check_array("numbers", self.numbers, np.int64, (None,))
        n = self.numbers.shape[0]
        if n == 0:
            raise ValueError("numbers: expected at least one atom, got none")
        if self.frac_coords.shape[0] != n:
            raise ValueError(
                f"frac_coords: expected ({n}, 3) to match numbers, got {self.frac_coords.shape}"
            )
        if not (isinstance(self.pbc, tuple) and len(self.pbc) == 3):
            raise TypeError(f"pbc: expected a tuple of three bools, got {self.pbc!r}")
        for name in ("lattice", "frac_coords"):
            # a sum is finite only if every term is (barring overflow near 1e308)
            if not np.isfinite(getattr(self, name).sum()):
                raise ValueError(f"{name}: expected finite values, got NaN or inf")
        if int(self.numbers.min()) < 1 or int(self.numbers.max()) > 118:
            bad = self.numbers[(self.numbers < 1) | (self.numbers > 118)][0]
            raise ValueError(f"numbers: expected atomic numbers 1..118, got {bad}")
        _check_lattice(self.lattice)
        _check_duplicates(self.frac_coords, self.pbc)
        return self

    def to_pymatgen(self) -> Any:
        """A pymatgen ``Structure`` (periodic) or ``Molecule`` (``pbc`` all False)."""
        import pymatgen.core as pmg

        species = self.numbers.tolist()
        if not any(self.pbc):
            return pmg.Molecule(species, self.cart_coords, properties=dict(self.properties))
        lattice = pmg.Lattice(self.lattice, pbc=self.pbc)
        return pmg.Structure(lattice, species, self.frac_coords, properties=dict(self.properties))


@dataclass(frozen=True)
class Reject:
    """An input that could not become a `Structure` (or could not be featurized), and why."""

    id: str
    source: str
    reason: str


def _check_array(name: str, value: Any, dtype: type, shape: tuple[int | None, ...]) -> None:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {value.dtype}")
    ok = value.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, value.shape))
    if not ok:
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {value.shape}")


def _check_lattice(lattice: np.ndarray) -> None:
    (a1, a2, a3), (b1, b2, b3), (c1, c2, c3) = lattice.tolist()
    det = a1 * (b2 * c3 - b3 * c2) - a2 * (b1 * c3 - b3 * c1) + a3 * (b1 * c2 - b2 * c1)
    lengths = [
        (x * x + y * y + z * z) ** 0.5 for x, y, z in ((a1, a2, a3), (b1, b2, b3), (c1, c2, c3))
    ]
    if abs(det) < SINGULAR_TOL * lengths[0] * lengths[1] * lengths[2] or not all(lengths):
        raise ValueError(f"lattice: expected a non-singular (3, 3) matrix, got det={det:.3g} Å^3")


def _check_duplicates(frac: np.ndarray, pbc: tuple[bool, bool, bool]) -> None:
    n = frac.shape[0]
    if n < 2:
        return
    grid = np.round(frac * (1 / DUPLICATE_GRID)).astype(np.int64)  # (N, 3)
    period = round(1 / DUPLICATE_GRID)
    for axis, periodic in enumerate(pbc):
        if periodic:
            grid[:, axis] %= period
    if 0 <= grid.min() and grid.max() < 1 << 20:
        # one packed int64 per atom: a 1-D unique is much cheaper than rows of tuples
        keys = (grid[:, 0] << 40) | (grid[:, 1] << 20) | grid[:, 2]
        if np.unique(keys).shape[0] == n:
            return
    seen: dict[tuple[int, ...], int] = {}
    for i, key in enumerate(map(tuple, grid.tolist())):
        if key in seen:
            raise ValueError(f"frac_coords: atoms {seen[key]} and {i} are at the same position")
        seen[key] = i


def _numeric_properties(properties: Mapping[str, Any] | None) -> dict[str, float]:
    """Keep numeric (and boolean, as 0.0/1.0) values as float; None -> NaN; drop the rest."""
    out: dict[str, float] = {}
    for key, value in (properties or {}).items():
        if value is None:
            out[str(key)] = float("nan")
        elif isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
            out[str(key)] = float(value)
    return out


def atomic_numbers(species: Sequence[str]) -> np.ndarray:
    """(N,) int64 atomic numbers of element symbols; unknown or dummy symbols are an error."""
    try:
        return np.array([ATOMIC_NUMBERS[s] for s in species], dtype=np.int64)
    except (KeyError, TypeError):
        bad = next(s for s in species if not isinstance(s, str) or s not in ATOMIC_NUMBERS)
        raise ValueError(f"species: expected element symbols H..Og, got {bad!r}") from None


def make_structure(
    id: str,
    lattice: Any,
    frac_coords: Any,
    numbers: Any,
    pbc: bool | Sequence[bool] = True,
    properties: Mapping[str, Any] | None = None,
    source: str = "",
) -> Structure:
    """Build and validate a `Structure` from array-likes (Å, fractional, atomic numbers)."""
    pbc3 = (bool(pbc),) * 3 if isinstance(pbc, (bool, np.bool_)) else tuple(bool(p) for p in pbc)
    try:
        arrays = (
            np.asarray(lattice, dtype=np.float64),
            np.asarray(frac_coords, dtype=np.float64),
        )
        z = np.asarray(numbers)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"lattice/frac_coords: expected numeric arrays ({exc})") from None
    if z.size and z.dtype.kind not in "iu":
        raise TypeError(f"numbers: expected integer atomic numbers, got dtype {z.dtype}")
    return Structure(
        id=id,
        lattice=arrays[0],
        frac_coords=arrays[1].reshape(-1, 3) if arrays[1].size == 0 else arrays[1],
        numbers=z.astype(np.int64),
        pbc=pbc3,  # type: ignore[arg-type]
        properties=_numeric_properties(properties),
        source=source,
    ).validate()


def from_cartesian(
    id: str,
    positions: Any,
    numbers: Any,
    lattice: Any = None,
    pbc: bool | Sequence[bool] | None = None,
    properties: Mapping[str, Any] | None = None,
    source: str = "",
    padding: float = MOLECULE_PADDING,
) -> Structure:
    """A `Structure` from Cartesian positions (N, 3) Å.

    Without ``lattice`` the record is a molecule: ``pbc`` all False and the lattice is an
    orthorhombic box enclosing the atoms with ``padding`` Å on every side (the atoms start at
    fractional ``padding / box`` ). ``pbc`` defaults to True with a lattice, False without.
    """
    try:
        pos = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"positions: expected a numeric (N, 3) array ({exc})") from None
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] == 0:
        raise ValueError(f"positions: expected shape (N, 3) with N >= 1, got {pos.shape}")
    if not np.isfinite(pos).all():
        raise ValueError("positions: expected finite values, got NaN or inf")
    if lattice is None:
        if pbc is not None and np.any(pbc):
            raise ValueError(f"pbc: a periodic structure needs a lattice, got pbc={pbc!r}")
        if not padding > 0:
            raise ValueError(f"padding: expected a positive length in Å, got {padding!r}")
        low = pos.min(axis=0) - padding
        box = np.diag(pos.max(axis=0) + padding - low)
        frac = (pos - low) / np.diag(box)
        return make_structure(id, box, frac, numbers, False, properties, source)
    cell = np.asarray(lattice, dtype=np.float64)
    if cell.shape != (3, 3):
        raise ValueError(f"lattice: expected shape (3, 3), got {cell.shape}")
    _check_lattice(cell)
    frac = np.linalg.solve(cell.T, pos.T).T
    return make_structure(id, cell, frac, numbers, True if pbc is None else pbc, properties, source)


def from_pymatgen(
    obj: Any, id: str, source: str = "", padding: float = MOLECULE_PADDING
) -> Structure:
    """A `Structure` from an ordered pymatgen ``Structure`` or ``Molecule``.

    Disordered (partially occupied) sites are an error; dummy species have no atomic number
    in 1..118 and are an error too.
    """
    if not getattr(obj, "is_ordered", True):
        raise ValueError(f"disorder: partially occupied sites in {obj.formula}; expected ordered")
    species = [site.specie for site in obj]
    for specie in species:
        if "Dummy" in type(specie).__name__:
            raise ValueError(f"species: dummy species {str(specie)!r} has no atomic number")
    numbers = [specie.Z for specie in species]
    properties = getattr(obj, "properties", None)
    if not hasattr(obj, "lattice"):
        return from_cartesian(id, obj.cart_coords, numbers, None, None, properties, source, padding)
    pbc = tuple(bool(p) for p in obj.lattice.pbc)
    return make_structure(id, obj.lattice.matrix, obj.frac_coords, numbers, pbc, properties, source)


def from_ase(atoms: Any, id: str, source: str = "", padding: float = MOLECULE_PADDING) -> Structure:
    """A `Structure` from ASE ``Atoms``: periodic with its cell, a boxed molecule without one.

    Numeric ``atoms.info`` entries and scalar calculator results (extxyz ``energy``) become
    properties. A cell that is only partly defined (a
    zero vector) is an error.
    """
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    info = dict(atoms.info)
    if atoms.calc is not None:
        info.update({k: v for k, v in atoms.calc.results.items() if np.ndim(v) == 0})
    if not cell.any():
        if atoms.pbc.any():
            raise ValueError(
                f"pbc: a periodic structure needs a cell, got pbc={atoms.pbc.tolist()}"
            )
        return from_cartesian(id, atoms.positions, atoms.numbers, None, None, info, source, padding)
    pbc = tuple(bool(p) for p in atoms.pbc)
    return from_cartesian(id, atoms.positions, atoms.numbers, cell, pbc, info, source)
