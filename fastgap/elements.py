"""Fixed physical descriptors of the elements for ``ModelConfig.element_features="physical"``.

``fastgap/elements.csv`` holds raw values for Z = 1..118 taken once from pymatgen's offline
element data by ``scripts/make_element_table.py`` (the source line is the file's first
line). ``element_descriptors`` turns them into the model's table:

- numeric columns (``NUMERIC``): a missing value is imputed with the mean of the known
  values of the same group (column mean when the whole group is missing) and flagged in a
  ``<name>_missing`` 0/1 column (only for columns that have missing values); every numeric
  column is then standardised to mean 0, std 1 over Z = 1..118;
- ``block`` becomes four 0/1 columns (s, p, d, f).

Row 0 (padding) is all zeros. Nothing is fetched at run time.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np

TABLE_PATH = Path(__file__).with_name("elements.csv")
NUMERIC = (
    "group", "period", "electronegativity", "covalent_radius", "atomic_radius",
    "ionisation_energy", "electron_affinity", "valence_s", "valence_p", "valence_d",
    "valence_f", "atomic_mass", "mendeleev_number", "molar_volume",
)  # fmt: skip
BLOCKS = ("s", "p", "d", "f")
N_ELEMENTS = 118


@lru_cache(maxsize=1)
def _raw_table() -> tuple[np.ndarray, tuple[str, ...]]:
    """(118, len(NUMERIC)) float64 raw values (NaN = missing) and the block of each element."""
    with TABLE_PATH.open(newline="") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    if [int(r["Z"]) for r in rows] != list(range(1, N_ELEMENTS + 1)):
        raise ValueError(f"{TABLE_PATH}: expected one row per Z = 1..{N_ELEMENTS} in order")
    values = np.array(
        [[float(r[c]) if r[c] != "" else np.nan for c in NUMERIC] for r in rows], dtype=np.float64
    )
    return values, tuple(r["block"] for r in rows)


def descriptor_names() -> list[str]:
    """Column names of ``element_descriptors`` (numeric, block one-hots, missing flags)."""
    values, _ = _raw_table()
    flagged = [f"{c}_missing" for c, miss in zip(NUMERIC, np.isnan(values).any(0)) if miss]
    return [*NUMERIC, *(f"block_{b}" for b in BLOCKS), *flagged]


def element_descriptors(max_z: int = N_ELEMENTS) -> np.ndarray:
    """(max_z + 1, F) float32 descriptor table; row z describes element z, row 0 is zeros.

    ``max_z`` must be in 1..118; F = ``len(descriptor_names())`` (28 for the shipped table).
    """
    if isinstance(max_z, bool) or not isinstance(max_z, int) or not 1 <= max_z <= N_ELEMENTS:
        raise ValueError(f"max_z: expected an int in 1..{N_ELEMENTS}, got {max_z!r}")
    values, blocks = _raw_table()
    missing = np.isnan(values)  # (118, C)
    group = values[:, NUMERIC.index("group")]
    filled = values.copy()
    for c in np.flatnonzero(missing.any(axis=0)):
        column = values[:, c]
        for row in np.flatnonzero(missing[:, c]):
            peers = column[(group == group[row]) & ~missing[:, c]]
            filled[row, c] = peers.mean() if peers.size else np.nanmean(column)
    std = filled.std(axis=0)
    scaled = (filled - filled.mean(axis=0)) / np.where(std > 0, std, 1.0)
    onehot = np.array([[b == name for name in BLOCKS] for b in blocks], dtype=np.float64)
    flags = missing[:, missing.any(axis=0)].astype(np.float64)
    table = np.concatenate([scaled, onehot, flags], axis=1)  # (118, F)
    out = np.zeros((max_z + 1, table.shape[1]), dtype=np.float32)
    out[1:] = table[:max_z]
    return out
