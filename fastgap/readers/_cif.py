"""CIF: gemmi as the fast path, pymatgen ``CifParser`` for what gemmi cannot read.

Both paths build the lattice with the same convention (pymatgen's ``Lattice.from_parameters``:
``a`` in the xz-plane, ``c`` along z), apply the CIF's symmetry operations, wrap the
generated positions into [0, 1) and merge images closer than ``SITE_TOLERANCE`` (fractional),
so a CIF gives the same record whichever path reads it. Like pymatgen, coordinates within a
relative ``1e-4`` of 1/3 or 2/3 (CIFs print 0.333333) are set to 1/3 and 2/3 exactly, so that
symmetry images of such sites coincide.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from fastgap.structures import Structure, from_pymatgen, make_structure

#: Symmetry images of one site closer than this (fractional, per axis) are one atom.
SITE_TOLERANCE = 1e-4
#: Relative tolerance for snapping printed thirds (0.333333) to 1/3 and 2/3, as pymatgen does.
IDEAL_FRACTION_TOLERANCE = 1e-4
#: Occupancies below ``1 - OCCUPANCY_TOLERANCE`` mark a disordered (partially occupied) site.
OCCUPANCY_TOLERANCE = 1e-3


class CannotRead(Exception):
    """The engine could not parse the text at all (as opposed to a rejected structure)."""


def lattice_from_parameters(
    a: float, b: float, c: float, alpha: float, beta: float, gamma: float
) -> np.ndarray:
    """(3, 3) float64 lattice (rows a, b, c; Å) from lengths (Å) and angles (degrees)."""
    al, be, ga = (math.radians(x) for x in (alpha, beta, gamma))
    cos_gamma_star = (math.cos(al) * math.cos(be) - math.cos(ga)) / (math.sin(al) * math.sin(be))
    gamma_star = math.acos(min(1.0, max(-1.0, cos_gamma_star)))
    return np.array(
        [
            [a * math.sin(be), 0.0, a * math.cos(be)],
            [
                -b * math.sin(al) * math.cos(gamma_star),
                b * math.sin(al) * math.sin(gamma_star),
                b * math.cos(al),
            ],
            [0.0, 0.0, c],
        ]
    )


def parse_cif(
    text: str, id: str, source: str, engine: str, disorder: str, *, check: bool = True
) -> list[Structure]:
    """One `Structure` per data block (ids ``<id>:<block>`` when there are several).

    ``engine``: "auto" (gemmi, then pymatgen if gemmi cannot parse), "gemmi" or "pymatgen".
    ``disorder``: "reject" or "majority" (see `ReadPolicy`). ``check=False`` leaves
    `Structure.validate` of gemmi results to the caller (bulk parsing validates a whole
    batch at once).
    """
    if engine in ("auto", "gemmi"):
        try:
            blocks = _gemmi_blocks(text)
        except CannotRead as exc:
            if engine == "gemmi":
                raise ValueError(f"CIF: gemmi cannot read it ({exc})") from None
            try:
                return _parse_pymatgen(text, id, source, disorder)
            except CannotRead as exc2:
                raise ValueError(f"CIF: neither gemmi ({exc}) nor pymatgen ({exc2}) can read it")
        ids = _block_ids(id, [name for name, _ in blocks])
        return [_from_gemmi(ss, i, source, disorder, check) for (_, ss), i in zip(blocks, ids)]
    try:
        return _parse_pymatgen(text, id, source, disorder)
    except CannotRead as exc:
        raise ValueError(f"CIF: pymatgen cannot read it ({exc})") from None


def _block_ids(id: str, names: list[str]) -> list[str]:
    return [id] if len(names) == 1 else [f"{id}:{name}" for name in names]


def _gemmi_blocks(text: str) -> list[tuple[str, Any]]:
    import gemmi

    try:
        doc = gemmi.cif.read_string(text)
        blocks = []
        for block in doc:
            if block.find_value("_cell_length_a") is None:
                raise ValueError(f"CIF: data block {block.name!r} has no _cell_length_a")
            blocks.append((block.name, gemmi.make_small_structure_from_block(block)))
    except (RuntimeError, IndexError) as exc:
        raise CannotRead(str(exc)) from None
    except ValueError as exc:
        if str(exc).startswith("CIF:"):
            raise
        raise CannotRead(str(exc)) from None
    if not blocks:
        raise ValueError("CIF: no data block")
    return blocks


def _from_gemmi(ss: Any, id: str, source: str, disorder: str, check: bool = True) -> Structure:
    sites = ss.sites
    if not sites:
        raise ValueError(f"CIF: block {ss.name!r} has no atom sites")
    rows = np.array([(*site.fract.tolist(), site.element.atomic_number, site.occ)
                     for site in sites], dtype=np.float64)  # (S, 5)  # fmt: skip
    numbers = rows[:, 3].astype(np.int64)
    if not numbers.all():
        site = sites[int(np.flatnonzero(numbers == 0)[0])]
        raise ValueError(f"species: unknown element {site.type_symbol or site.label!r}")
    frac, occ = rows[:, :3].copy(), rows[:, 4]
    for ideal in (1.0 / 3.0, 2.0 / 3.0):
        frac[np.abs(frac / ideal - 1.0) <= IDEAL_FRACTION_TOLERANCE] = ideal
    frac, numbers = _resolve_disorder(frac, numbers, occ, sites, disorder)
    frac, numbers = _expand(frac, numbers, _gemmi_ops(ss))
    cell = ss.cell
    lattice = lattice_from_parameters(cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma)
    if check:
        return make_structure(id, lattice, frac, numbers, True, None, source)
    frac = np.ascontiguousarray(frac, dtype=np.float64).reshape(-1, 3)
    return Structure(id, lattice, frac, numbers.astype(np.int64), (True, True, True), {}, source)


def _gemmi_ops(ss: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Symmetry operations as (rotation (3, 3), translation (3,)) in fractional coordinates."""
    import gemmi

    if ss.symops:
        ops = [gemmi.Op(s) for s in ss.symops]
    elif ss.spacegroup is not None:
        ops = list(ss.spacegroup.operations())
    else:
        return []
    if len(ops) == 1 and ops[0].triplet() == "x,y,z":
        return []  # P1 as written by most tools: nothing to expand
    den = float(gemmi.Op.DEN)
    return [(np.array(op.rot) / den, np.array(op.tran) / den) for op in ops]


def _resolve_disorder(
    frac: np.ndarray, numbers: np.ndarray, occ: np.ndarray, sites: Any, disorder: str
) -> tuple[np.ndarray, np.ndarray]:
    """Reject partial occupancy, or keep the majority species of each position ("majority")."""
    partial = occ < 1.0 - OCCUPANCY_TOLERANCE
    if not partial.any():
        return frac, numbers
    if disorder != "majority":
        i = int(np.flatnonzero(partial)[0])
        raise ValueError(
            f"disorder: site {sites[i].label!r} is partially occupied (occupancy {occ[i]:g}); "
            "ReadPolicy(disorder='majority') keeps the majority species"
        )
    keys = [tuple(np.round(np.mod(f, 1.0) / SITE_TOLERANCE).astype(np.int64)) for f in frac]
    best: dict[tuple, int] = {}
    for i, key in enumerate(keys):
        if key not in best or occ[i] > occ[best[key]]:
            best[key] = i
    keep = sorted(best.values())
    return frac[keep], numbers[keep]


def _expand(
    frac: np.ndarray, numbers: np.ndarray, ops: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Apply symmetry operations site by site; keep distinct images in operation order."""
    trivial = len(ops) <= 1 and all(np.array_equal(r, np.eye(3)) and not t.any() for r, t in ops)
    if trivial:
        return frac, numbers
    rot = np.stack([r for r, _ in ops])  # (O, 3, 3)
    tra = np.stack([t for _, t in ops])  # (O, 3)
    images = np.einsum("oij,sj->soi", rot, frac) + tra  # (S, O, 3)
    images = np.mod(images, 1.0)
    out_frac, out_numbers = [], []
    for s in range(frac.shape[0]):
        kept: list[np.ndarray] = []
        for image in images[s]:
            if not any(_periodic_close(image, k) for k in kept):
                kept.append(image)
        out_frac.extend(kept)
        out_numbers.extend([numbers[s]] * len(kept))
    return np.array(out_frac), np.array(out_numbers, dtype=np.int64)


def _periodic_close(x: np.ndarray, y: np.ndarray) -> bool:
    d = np.abs(x - y)
    return bool((np.minimum(d, 1.0 - d) < SITE_TOLERANCE).all())


def _parse_pymatgen(text: str, id: str, source: str, disorder: str) -> list[Structure]:
    from pymatgen.io.cif import CifParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parser = CifParser.from_str(text)
            structures = parser.parse_structures(primitive=False, on_error="raise")
    except Exception as exc:  # noqa: BLE001 -- pymatgen raises many types for unreadable text
        raise CannotRead(f"{type(exc).__name__}: {exc}") from None
    if not structures:
        raise CannotRead("no structure in the file")
    ids = _block_ids(id, [str(i) for i in range(len(structures))])
    return [
        from_pymatgen(majority_species(s) if disorder == "majority" else s, i, source)
        for s, i in zip(structures, ids)
    ]


def majority_species(obj: Any) -> Any:
    """A copy of a pymatgen structure with each disordered site set to its majority species."""
    if obj.is_ordered:
        return obj
    obj = obj.copy()
    for i, site in enumerate(obj):
        if not site.is_ordered or site.species.num_atoms < 1.0 - OCCUPANCY_TOLERANCE:
            specie, _ = max(site.species.items(), key=lambda kv: kv[1])
            obj.replace(i, specie)
    return obj
