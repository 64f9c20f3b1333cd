"""The canonical structure record every reader produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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


@dataclass(frozen=True)
class Reject:
    """An input that could not become a `Structure` (or could not be featurized), and why."""

    id: str
    source: str
    reason: str
