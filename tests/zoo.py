"""A zoo of structures that stress neighbour lists, built in code plus a few real MP records.

Covers: 1-atom sc/bcc/fcc/hexagonal cells and hcp, cells far smaller than the 19th-neighbour
distance, strongly skewed triclinic cells, slabs with 20 Å vacuum (mixed and full pbc), a
512-atom supercell, coordinates outside [0, 1), ties that mix elements (Cu3Au), rock salt and
other binaries, molecules with fewer than k atoms (padding), a periodic chain and random cells.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
FULL = (True, True, True)
NONE = (False, False, False)
_SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "Na": 11, "Si": 14, "S": 16, "Cl": 17, "Ti": 22,
            "Co": 27, "Cu": 29, "Zn": 30, "Sr": 38, "Nb": 41, "Te": 52, "Cs": 55, "Ba": 56,
            "Sc": 21, "Hf": 72, "Au": 79}


@dataclass(frozen=True)
class ZooStructure:
    """One test structure: lattice (3, 3) Å rows, frac_coords (N, 3), numbers (N,), pbc."""

    name: str
    lattice: np.ndarray
    frac_coords: np.ndarray
    numbers: np.ndarray
    pbc: tuple[bool, bool, bool] = FULL

    @property
    def periodic(self) -> bool:
        return all(self.pbc)


def cell(a: float, b: float, c: float, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """Lattice (3, 3) Å from lengths (Å) and angles (degrees), a along x, b in the xy plane."""
    al, be, ga = np.radians([alpha, beta, gamma])
    cx = c * np.cos(be)
    cy = c * (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
    cz = np.sqrt(c * c - cx * cx - cy * cy)
    return np.array([[a, 0.0, 0.0], [b * np.cos(ga), b * np.sin(ga), 0.0], [cx, cy, cz]])


def _make(name: str, lattice, frac, numbers, pbc=FULL) -> ZooStructure:
    return ZooStructure(name, np.asarray(lattice, float), np.asarray(frac, float).reshape(-1, 3),
                        np.asarray(numbers, np.int64), tuple(pbc))


def _one_atom_cells() -> list[ZooStructure]:
    out = []
    for a in (2.0, 3.1):
        out.append(_make(f"sc-{a}", np.eye(3) * a, [0, 0, 0], [29]))
    for a in (2.87, 3.3):
        out.append(_make(f"bcc-{a}", 0.5 * a * (np.ones((3, 3)) - 2 * np.eye(3)), [0, 0, 0], [26]))
    for a in (3.61, 4.05, 5.0):
        out.append(_make(f"fcc-{a}", 0.5 * a * (np.ones((3, 3)) - np.eye(3)), [0, 0, 0], [13]))
    out.append(_make("hex-1atom", cell(2.5, 2.5, 3.0, 90, 90, 120), [0.3, 0.1, 0.7], [6]))
    for a, c in ((2.95, 4.68), (3.21, 5.21)):
        out.append(_make(f"hcp-{a}", cell(a, a, c, 90, 90, 120),
                         [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]], [22, 22]))
    return out


def _tiny_cells() -> list[ZooStructure]:
    return [
        _make("sc-tiny", np.eye(3) * 0.9, [0.5, 0.5, 0.5], [1]),
        _make("fcc-tiny", 0.6 * (np.ones((3, 3)) - np.eye(3)), [0, 0, 0], [2]),
        _make("tri-tiny", cell(0.8, 1.1, 0.95, 70, 100, 80), [0.2, 0.9, 0.4], [3]),
    ]


def _triclinic() -> list[ZooStructure]:
    params = [(3.0, 4.0, 5.0, 60, 60, 10), (3.0, 4.0, 5.0, 170, 95, 90),
              (4.0, 4.5, 3.5, 100, 100, 150), (5.0, 3.0, 4.0, 20, 30, 40),
              (4.0, 4.0, 6.0, 80, 20, 70), (3.5, 5.5, 4.5, 165, 100, 80)]
    frac = [[0.0, 0.0, 0.0], [0.37, 0.61, 0.52]]
    return [_make(f"triclinic-{i}", cell(*p), frac, [8, 30]) for i, p in enumerate(params)]


def _slabs() -> list[ZooStructure]:
    a = 2.55  # fcc(111) layers of Cu, three layers in a 20 Å vacuum gap
    layer_z = np.array([0.0, 2.08, 4.16])
    c = layer_z[-1] + 20.0
    lattice = cell(a, a, c, 90, 90, 120)
    frac = [[(i % 3) / 3, (i % 3) / 3, z / c] for i, z in enumerate(layer_z)]
    return [_make("slab-2d", lattice, frac, [29, 29, 79], (True, True, False)),
            _make("slab-3d", lattice, frac, [29, 29, 79], FULL),
            _make("chain-1d", np.diag([2.4, 10.0, 10.0]), [[0, 0.5, 0.5], [0.5, 0.6, 0.5]],
                  [6, 1], (True, False, False))]


def _binaries() -> list[ZooStructure]:
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    rocksalt = np.concatenate([fcc, fcc + [0.5, 0, 0]])
    return [
        _make("Cu3Au", np.eye(3) * 3.75, fcc, [79, 29, 29, 29]),
        _make("CuAu3", np.eye(3) * 4.0, fcc, [29, 79, 79, 79]),
        _make("NaCl-conv", np.eye(3) * 5.64, rocksalt, [11] * 4 + [17] * 4),
        _make("NaCl-prim", 2.82 * (np.ones((3, 3)) - np.eye(3)), [[0, 0, 0], [0.5, 0.5, 0.5]],
              [11, 17]),
        _make("CsCl", np.eye(3) * 4.12, [[0, 0, 0], [0.5, 0.5, 0.5]], [55, 17]),
        _make("SrTiO3", np.eye(3) * 3.905,
              [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
              [38, 22, 8, 8, 8]),
        _make("diamond-Si", 2.715 * (np.ones((3, 3)) - np.eye(3)),
              [[0, 0, 0], [0.25, 0.25, 0.25]], [14, 14]),
        _make("wurtzite-ZnO", cell(3.25, 3.25, 5.2, 90, 90, 120),
              [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.382],
               [2 / 3, 1 / 3, 0.882]], [30, 30, 8, 8]),
        _make("NaCl-outside", np.eye(3) * 5.64, rocksalt + np.array([[3, -2, 0]] * 4 + [[-1, 0, 7]] * 4),
              [11] * 4 + [17] * 4),
        _make("CsCl-negative", np.eye(3) * 4.12, [[-0.999, -3.0, 2.0], [-0.5, 10.5, -0.5]],
              [55, 17]),
        # -1e-17 + 1 rounds to 1.0: wrapping must still land in [0, 1)
        _make("CsCl-tiny-negative", np.eye(3) * 4.12, [[-1e-17, 0.0, -1e-300], [0.5, 0.5, 0.5]],
              [55, 17]),
    ]


def _supercell() -> ZooStructure:
    base = _binaries()[2]  # conventional rock salt, 8 atoms -> 4x4x4 = 512 atoms
    shifts = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    frac = ((base.frac_coords[None] + shifts) / 4).reshape(-1, 3)
    rng = np.random.default_rng(7)
    frac = frac + rng.normal(scale=0.002, size=frac.shape)
    return _make("NaCl-512", base.lattice * 4, frac, np.tile(base.numbers, 64))


def _molecules() -> list[ZooStructure]:
    box = np.eye(3) * 10.0
    water = np.array([[0, 0, 0], [0.0957, 0, 0], [-0.024, 0.0927, 0]]) + 0.5
    methane = 0.5 + 1.09 / np.sqrt(3) / 10.0 * np.array(
        [[0, 0, 0], [1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    ring = np.linspace(0, 2 * np.pi, 7)[:-1]
    benzene = np.concatenate([
        np.stack([1.39 * np.cos(ring), 1.39 * np.sin(ring), 0 * ring], 1),
        np.stack([2.47 * np.cos(ring), 2.47 * np.sin(ring), 0 * ring], 1)]) / 10.0 + 0.5
    return [
        _make("water", box, water, [8, 1, 1], NONE),
        _make("methane", box, methane, [6, 1, 1, 1, 1], NONE),
        _make("benzene", box, benzene, [6] * 6 + [1] * 6, NONE),
        _make("single-atom", box, [0.5, 0.5, 0.5], [18], NONE),
        _make("water-outside-box", box, water + [[2.0, -1.0, 0.0]], [8, 1, 1], NONE),
    ]


def _random_cells(count: int = 16, seed: int = 2024) -> list[ZooStructure]:
    """Random triclinic cells with 1-12 atoms kept at least ~1 Å apart (rejection sampling)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        lengths = rng.uniform(2.5, 7.0, 3)
        angles = rng.uniform(55, 125, 3)
        lattice = cell(*lengths, *angles)
        if not np.isfinite(lattice).all() or abs(np.linalg.det(lattice)) < 5.0:
            continue
        n = int(rng.integers(1, 13))
        frac = rng.uniform(-0.5, 1.5, (n, 3))
        numbers = rng.integers(1, 119, n)
        if _min_distance(lattice, frac) < 1.0:
            continue
        out.append(_make(f"random-{len(out)}", lattice, frac, numbers))
    return out


def _min_distance(lattice: np.ndarray, frac: np.ndarray) -> float:
    """Smallest distance between atoms/images over a generous image range (sampling only)."""
    img = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    delta = (frac[None, :, None] - frac[:, None, None] + img[None, None]) @ lattice
    dist = np.linalg.norm(delta, axis=-1)
    dist[np.arange(len(frac)), np.arange(len(frac)), len(img) // 2] = np.inf
    return float(dist.min())


def mp_sample() -> list[ZooStructure]:
    """A few small Materials Project records from tests/data/mp_sample.jsonl."""
    out = []
    with open(DATA / "mp_sample.jsonl", encoding="utf-8") as handle:
        for line in handle:
            rec = json.loads(line)
            out.append(_make(rec["id"], rec["lattice"], rec["frac_coords"],
                             [_SYMBOLS[s] for s in rec["species"]]))
    return out


def zoo(include_large: bool = True) -> list[ZooStructure]:
    """Every zoo structure (the 512-atom supercell only with ``include_large``)."""
    out = (_one_atom_cells() + _tiny_cells() + _triclinic() + _slabs() + _binaries()
           + _molecules() + _random_cells() + mp_sample())
    if include_large:
        out.append(_supercell())
    return out


def as_batch(structures: list[ZooStructure]) -> dict[str, np.ndarray]:
    """Concatenate structures into `neighbor_lists_batch` arguments."""
    sizes = [len(s.numbers) for s in structures]
    return {
        "lattices": np.stack([s.lattice for s in structures]),
        "frac_coords": np.concatenate([s.frac_coords for s in structures]),
        "numbers": np.concatenate([s.numbers for s in structures]),
        "atom_ptr": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "pbc": np.array([s.pbc for s in structures], dtype=bool),
    }
