"""One AFLUX entry -> one fastgap JSON-lines record (`fastgap.aflow_source` fetches them).

The cell is rebuilt from AFLOW's ``geometry`` (a along x, b in the xy plane), the atoms
from ``species`` with ``composition`` (or ``stoichiometry``) counts and
``positions_fractional``; the rebuilt volume and density are checked against the ones AFLOW
records. Anything that cannot be rebuilt raises ``ValueError`` with the reason, which the
caller writes to the rejects CSV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fastgap.aflow_source import AflowConfig

AMU_A3_TO_G_CM3 = 1.66053906660  # 1 amu / 1 Å^3 in g/cm^3


def lattice_from_geometry(geometry: np.ndarray) -> np.ndarray:
    """(3, 3) float64 lattice (rows a, b, c in Å) from AFLOW ``geometry``
    ``[a, b, c, alpha, beta, gamma]`` (Å, degrees); a along x, b in the xy plane.

    Raises:
        ValueError: non-positive lengths or angles that do not make a cell.
    """
    a, b, c = geometry[:3]
    alpha, beta, gamma = np.radians(geometry[3:])
    if min(a, b, c) <= 0:
        raise ValueError(f"geometry: expected positive a, b, c, got {geometry[:3].tolist()}")
    ca, cb, cg, sg = np.cos(alpha), np.cos(beta), np.cos(gamma), np.sin(gamma)
    if sg <= 1e-8:
        raise ValueError(f"geometry: gamma {geometry[5]} degrees does not make a cell")
    cx = c * cb
    cy = c * (ca - cb * cg) / sg
    cz2 = c * c - cx * cx - cy * cy
    if cz2 <= (1e-6 * c) ** 2:
        raise ValueError(f"geometry: angles {geometry[3:].tolist()} do not make a cell")
    return np.array([[a, 0.0, 0.0], [b * cg, b * sg, 0.0], [cx, cy, np.sqrt(cz2)]])


def _value(entry: dict[str, Any], key: str) -> Any:
    value = entry.get(key)
    if value is None or value == "" or value == []:
        raise ValueError(f"missing {key}")
    return value


def _floats(entry: dict[str, Any], key: str) -> np.ndarray:
    """Numbers of ``key`` from a JSON list or AFLOW's comma/semicolon string form."""
    value = _value(entry, key)
    try:
        if isinstance(value, str):
            rows = [row.split(",") for row in value.strip().split(";")]
            arr = np.array(rows if len(rows) > 1 else rows[0], dtype=np.float64)
        else:
            arr = np.array(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise ValueError(f"{key}: expected numbers, got {str(value)[:80]!r}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{key}: non-finite values in {str(value)[:80]!r}")
    return arr


def _strings(entry: dict[str, Any], key: str) -> list[str]:
    value = _value(entry, key)
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ValueError(f"{key}: expected a list of strings, got {str(value)[:80]!r}")
    return [x.strip() for x in items]


def _counts(entry: dict[str, Any], n_species: int, n_atoms: int) -> np.ndarray:
    """Atoms per species in AFLOW's order: ``composition``, else ``stoichiometry`` x atoms."""
    if entry.get("composition") not in (None, "", []):
        raw, key = _floats(entry, "composition"), "composition"
    else:
        raw, key = _floats(entry, "stoichiometry") * n_atoms, "stoichiometry"
    if raw.shape != (n_species,):
        raise ValueError(f"{key}: expected {n_species} counts (one per species), "
                         f"got {raw.tolist()}")
    counts = np.rint(raw)
    if np.any(np.abs(raw - counts) > 1e-3) or np.any(counts < 1):
        raise ValueError(f"{key}: expected positive whole atom counts, got {raw.tolist()}")
    return counts.astype(np.int64)


def record_from_entry(entry: Any, config: AflowConfig, seen_ids: set[str]) -> dict[str, Any]:
    """One AFLUX entry as a fastgap JSON-lines record (``id`` = auid, ``lattice``,
    ``species``, ``frac_coords``, ``properties``, ``meta``).

    Raises:
        ValueError: the reason the entry cannot be rebuilt (it goes to the rejects file).
        TypeError: the entry is not a JSON object.
    """
    from ase.data import atomic_masses, atomic_numbers

    if not isinstance(entry, dict):
        raise TypeError(f"entry: expected a JSON object, got {type(entry).__name__}")
    auid = _value(entry, "auid")
    if not isinstance(auid, str) or auid in seen_ids:
        raise ValueError(f"auid: expected a new string id, got {auid!r} (duplicate or wrong type)")
    species = _strings(entry, "species")
    unknown = [s for s in species if s not in atomic_numbers or s == "X"]
    if unknown:
        raise ValueError(f"species: unknown element(s) {unknown}")
    frac = _floats(entry, "positions_fractional")
    if frac.ndim == 1 and frac.size % 3 == 0:
        frac = frac.reshape(-1, 3)  # one atom, or a flat list
    if frac.ndim != 2 or frac.shape[1] != 3 or frac.shape[0] == 0:
        raise ValueError(f"positions_fractional: expected N rows of 3 numbers, got shape "
                         f"{frac.shape}")
    counts = _counts(entry, len(species), frac.shape[0])
    if counts.sum() != frac.shape[0]:
        raise ValueError(f"composition {counts.tolist()} sums to {counts.sum()} atoms but "
                         f"positions_fractional has {frac.shape[0]}")
    symbols = [s for s, n in zip(species, counts) for _ in range(n)]
    geometry = _floats(entry, "geometry")
    if geometry.shape != (6,):
        raise ValueError(f"geometry: expected [a, b, c, alpha, beta, gamma], got {geometry}")
    lattice = lattice_from_geometry(geometry)
    volume = abs(float(np.linalg.det(lattice)))
    mass = float(sum(atomic_masses[atomic_numbers[s]] for s in symbols))
    density = mass * AMU_A3_TO_G_CM3 / volume
    _check_close(entry, "volume_cell", volume, config.check_rtol)
    recorded = _check_close(entry, "density", density, config.check_rtol)
    egap = float(_floats(entry, "Egap").reshape(-1)[0])
    if egap < 0 or (config.nonzero_gap and egap == 0):
        raise ValueError(f"Egap: expected {'> 0' if config.nonzero_gap else '>= 0'} eV, "
                         f"got {egap}")
    meta = {"aurl": entry.get("aurl"), "compound": entry.get("compound"),
            "catalog": entry.get("catalog") or config.catalog}
    return {
        "id": auid,
        "lattice": lattice.tolist(),
        "species": symbols,
        "frac_coords": frac.tolist(),
        "properties": {"band_gap_eV": egap,
                       "density_g_cm3": recorded if recorded is not None else density},
        "meta": meta,
    }


def _check_close(entry: dict[str, Any], key: str, rebuilt: float, rtol: float) -> float | None:
    """The recorded value of ``key`` (None if absent) after checking it against ``rebuilt``."""
    if entry.get(key) in (None, ""):
        return None
    recorded = float(_floats(entry, key).reshape(-1)[0])
    if not abs(rebuilt - recorded) <= rtol * abs(recorded):
        raise ValueError(f"{key}: rebuilt cell gives {rebuilt:.6g} but AFLOW records "
                         f"{recorded:.6g} (rtol {rtol})")
    return recorded
