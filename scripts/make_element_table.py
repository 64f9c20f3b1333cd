"""Write ``fastgap/elements.csv``: raw physical descriptors of the elements Z = 1..118.

Source: pymatgen's offline element data (``pymatgen.core.periodic_table.Element`` and the
covalent radii of ``pymatgen.analysis.molecule_structure_comparator.CovalentRadius``);
nothing is downloaded. Missing values are left empty; ``fastgap.elements`` imputes, flags
and standardises them when a model is built. Run once, commit the CSV:

    python scripts/make_element_table.py [--out fastgap/elements.csv]

Columns (units): group (1..18), period (1..7), block (s/p/d/f), electronegativity (Pauling),
covalent_radius (Å), atomic_radius (Å, empirical), ionisation_energy (first, eV),
electron_affinity (eV), valence_s / valence_p / valence_d / valence_f (electrons in the
outermost s shell n, the p shell n, the d shell n-1 and the f shell n-2 of the neutral
ground-state configuration), atomic_mass (u), mendeleev_number, molar_volume (cm^3/mol).
"""

from __future__ import annotations

import argparse
import csv
import math
import warnings
from pathlib import Path

from fastgap.features import as_float

COLUMNS = (
    "Z", "symbol", "group", "period", "block", "electronegativity", "covalent_radius",
    "atomic_radius", "ionisation_energy", "electron_affinity", "valence_s", "valence_p",
    "valence_d", "valence_f", "atomic_mass", "mendeleev_number", "molar_volume",
)  # fmt: skip


def _attr(element: object, name: str) -> object:
    """``element.<name>``, or None where pymatgen has no value (it raises KeyError)."""
    try:
        return getattr(element, name)
    except (KeyError, ValueError, AttributeError):
        return None


def _valence(element: object) -> tuple[float, float, float, float]:
    """(s, p, d, f) electrons of the shells n, n, n-1, n-2 (n = highest occupied s shell)."""
    try:
        shells = element.full_electronic_structure  # [(n, "s", occupancy), ...]
    except (KeyError, ValueError, AttributeError):
        return (math.nan,) * 4
    n = max(level for level, kind, _ in shells if kind == "s")
    want = {"s": n, "p": n, "d": n - 1, "f": n - 2}
    count = dict.fromkeys("spdf", 0.0)
    for level, kind, occupancy in shells:
        if want.get(kind) == level:
            count[kind] += occupancy
    return count["s"], count["p"], count["d"], count["f"]


def element_rows() -> list[dict[str, object]]:
    """One dict per element Z = 1..118 with the ``COLUMNS`` values (NaN = missing)."""
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius
    from pymatgen.core.periodic_table import Element

    rows = []
    for z in range(1, 119):
        el = Element.from_Z(z)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns for every missing property
            energies = _attr(el, "ionization_energies")
            row = {
                "Z": z, "symbol": el.symbol, "group": _attr(el, "group"),
                "period": _attr(el, "row"),
                "block": _attr(el, "block"), "electronegativity": as_float(_attr(el, "X")),
                "covalent_radius": as_float(CovalentRadius.radius.get(el.symbol)),
                "atomic_radius": as_float(_attr(el, "atomic_radius")),
                "ionisation_energy": as_float(energies[0] if energies else None),
                "electron_affinity": as_float(_attr(el, "electron_affinity")),
                "atomic_mass": as_float(_attr(el, "atomic_mass")),
                "mendeleev_number": as_float(_attr(el, "mendeleev_no")),
                "molar_volume": as_float(_attr(el, "molar_volume")),
            }  # fmt: skip
        row.update(zip(("valence_s", "valence_p", "valence_d", "valence_f"), _valence(el)))
        rows.append(row)
    return rows


def write_table(path: Path) -> None:
    import pymatgen.core

    rows = element_rows()
    with path.open("w", newline="") as fh:
        fh.write(f"# source: pymatgen {pymatgen.core.__version__} offline element data "
                 "(Element, CovalentRadius); written by scripts/make_element_table.py\n")
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v
                             for k, v in row.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "fastgap" / "elements.csv"
    parser.add_argument("--out", type=Path, default=default)
    args = parser.parse_args()
    write_table(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
