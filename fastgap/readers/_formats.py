"""Parsers for JSON-lines records, POSCAR/CONTCAR and extended XYZ (text -> `Structure`)."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import orjson

from fastgap.structures import (
    Structure,
    atomic_numbers,
    from_ase,
    from_cartesian,
    make_structure,
)


def record_id(payload: bytes | str) -> str | None:
    """The ``id`` of a JSON-lines record, or None when the line is not a record with an id."""
    try:
        rec = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    rid = rec.get("id") if isinstance(rec, dict) else None
    return rid if isinstance(rid, str) and rid else None


def parse_jsonl_record(rec: Any, source: str, padding: float) -> Structure:
    """One JSON-lines record (already decoded) -> `Structure`.

    Crystals have ``lattice`` (3, 3) Å and ``frac_coords`` (N, 3); molecules have
    ``positions`` (N, 3) Cartesian Å and no lattice. ``species`` (N,) element symbols.
    """
    if not isinstance(rec, dict):
        raise ValueError(f"record: expected a JSON object, got {type(rec).__name__}")
    rid = rec.get("id")
    if not isinstance(rid, str) or not rid:
        raise ValueError(f"id: expected a non-empty string, got {rid!r}")
    species = rec.get("species")
    if not isinstance(species, list):
        raise ValueError(f"species: expected a list of element symbols, got {species!r:.60}")
    numbers = atomic_numbers(species)
    properties = rec.get("properties")
    if properties is not None and not isinstance(properties, dict):
        raise ValueError(f"properties: expected an object, got {type(properties).__name__}")
    if rec.get("lattice") is not None:
        if "frac_coords" not in rec:
            raise ValueError("frac_coords: missing (a record with a lattice needs them)")
        return make_structure(
            rid, rec["lattice"], rec["frac_coords"], numbers, True, properties, source
        )
    if "positions" in rec:
        return from_cartesian(
            rid, rec["positions"], numbers, None, None, properties, source, padding
        )
    raise ValueError("record: expected 'lattice' + 'frac_coords' or 'positions'")


def parse_poscar(text: str, id: str, source: str) -> Structure:
    """VASP 5 POSCAR/CONTCAR (species line required): scale, Direct or Cartesian coordinates.

    A negative scale is the cell volume (Å^3); three scales scale the axes separately.
    Selective-dynamics flags and velocities are ignored.
    """
    lines = text.splitlines()
    try:
        scale = [float(x) for x in lines[1].split()]
        lattice = np.array([_three_floats(lines[i]) for i in (2, 3, 4)])
        species = lines[5].split()
        if species and _is_int(species[0]):
            raise ValueError("POSCAR: no species line (VASP 4 format is not supported)")
        counts = [int(x) for x in lines[6].split()]
        row = 7
        if lines[row].strip()[:1] in ("S", "s"):
            row += 1
        cartesian = lines[row].strip()[:1] in ("C", "c", "K", "k")
        n = sum(counts)
        coords = np.array([_three_floats(lines[row + 1 + i]) for i in range(n)]).reshape(n, 3)
    except IndexError:
        raise ValueError("POSCAR: file ends early (truncated or not a POSCAR)") from None
    except ValueError as exc:
        if str(exc).startswith("POSCAR"):
            raise
        raise ValueError(f"POSCAR: malformed number ({exc})") from None
    if len(species) != len(counts):
        raise ValueError(f"POSCAR: {len(species)} species but {len(counts)} counts")
    if len(scale) not in (1, 3):
        raise ValueError(f"POSCAR: expected 1 or 3 scale factors, got {len(scale)}")
    if len(scale) == 3:
        factor = np.array(scale)
    elif scale[0] < 0:
        factor = np.full(3, (-scale[0] / abs(np.linalg.det(lattice))) ** (1.0 / 3.0))
    else:
        factor = np.full(3, scale[0])
    lattice = lattice * factor[None, :]  # VASP scales the Cartesian components
    # VASP >= 5.4 writes POTCAR names such as "Fe_pv" or "Fe/abc123" on the species line
    symbols = [s.split("_")[0].split("/")[0] for s in species]
    numbers = np.repeat(atomic_numbers(symbols), counts)
    if cartesian:
        return from_cartesian(id, coords * factor[None, :], numbers, lattice, True, None, source)
    return make_structure(id, lattice, coords, numbers, True, None, source)


def _three_floats(line: str) -> list[float]:
    values = [float(x) for x in line.split()[:3]]
    if len(values) != 3:
        raise ValueError(f"POSCAR: expected 3 numbers on line {line.strip()!r}")
    return values


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def parse_extxyz(text: str, stem: str, source: str, padding: float) -> list[Structure]:
    """Extended XYZ via ASE: one `Structure` per frame.

    A frame's id is the ``id`` of its comment line (``id=water``, a non-empty string, as an
    ASE object's ``info["id"]``), else ``<stem>:<frame>`` (frames counted from 0). A frame
    with a ``Lattice`` is periodic along its ``pbc``; without one it is a molecule.
    """
    from ase.io import read

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = read(io.StringIO(text), index=":", format="extxyz")
    except Exception as exc:  # noqa: BLE001 -- ASE raises many types for malformed text
        raise ValueError(f"extxyz: cannot parse ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise ValueError("extxyz: no frames")
    ids = [atoms.info.get("id") for atoms in frames]
    return [
        from_ase(atoms, rid if isinstance(rid, str) and rid else f"{stem}:{i}",
                 f"{source}:frame {i}", padding)
        for i, (atoms, rid) in enumerate(zip(frames, ids))
    ]
