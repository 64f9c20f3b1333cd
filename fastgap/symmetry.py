"""The symmetry study: how much a model's prediction moves over equivalent crystal descriptions.

A crystal has many equivalent descriptions: the lattice axes can be relabelled, the origin
moved, the atoms listed in any order, the whole cell rotated, another primitive cell chosen,
or a supercell used. The physical property does not change, so neither should a prediction.
The design reads neighbour (element, distance) sequences, which the neighbour-list contract
makes independent of atom order, origin and orientation, but it orders atoms by fractional
(x, y, z), which is not; this module measures the consequence.

Transformation families (``FAMILIES``), each taking a periodic `Structure` and a
``np.random.Generator``:

- ``axis_swap``: a random non-identity permutation of the lattice vectors (and coordinates).
- ``origin_shift``: every fractional coordinate shifted by one random vector.
- ``atom_permutation``: the atoms listed in a random order.
- ``rotation``: the Cartesian frame rotated by a random proper rotation (lattice @ R^T).
- ``cell_choice``: another primitive cell, a' = a + n b (random n in +-1..2; det 1).
- ``supercell_221`` / ``supercell_222``: 2x2x1 and 2x2x2 supercells.

`symmetry_spread` predicts the original and ``n_variants`` descriptions per family and
reports, per target, the mean and max over structures of the standard deviation
(population, ddof 0) of the ``1 + n_variants`` predictions of each structure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fastgap.structures import Structure, make_structure

if TYPE_CHECKING:
    import torch

    from fastgap.features import FeaturizerConfig

_AXIS_PERMUTATIONS = ((1, 0, 2), (0, 2, 1), (2, 1, 0), (1, 2, 0), (2, 0, 1))


def _rebuild(s: Structure, lattice: np.ndarray, frac: np.ndarray, numbers: np.ndarray,
             suffix: str) -> Structure:
    """A validated copy of ``s`` with new geometry; id ``<id>~<suffix>``."""
    return make_structure(
        f"{s.id}~{suffix}", lattice, frac, numbers, s.pbc, dict(s.properties), s.source
    )


def _check_periodic(s: Structure) -> None:
    if not isinstance(s, Structure):
        raise TypeError(f"structure: expected a fastgap Structure, got {type(s).__name__}")
    if not all(s.pbc):
        raise ValueError(
            f"structure: expected a periodic crystal (pbc all True), got pbc={s.pbc} for {s.id!r}"
        )


def axis_swap(s: Structure, rng: np.random.Generator) -> Structure:
    """Relabel the lattice vectors by a random non-identity permutation (same crystal)."""
    perm = list(_AXIS_PERMUTATIONS[int(rng.integers(len(_AXIS_PERMUTATIONS)))])
    return _rebuild(s, s.lattice[perm], s.frac_coords[:, perm], s.numbers, "axis_swap")


def origin_shift(s: Structure, rng: np.random.Generator) -> Structure:
    """Move the origin by a random fractional vector (coordinates wrapped into [0, 1))."""
    frac = (s.frac_coords + rng.random(3)) % 1.0
    return _rebuild(s, s.lattice, frac, s.numbers, "origin_shift")


def atom_permutation(s: Structure, rng: np.random.Generator) -> Structure:
    """List the atoms in a random order."""
    perm = rng.permutation(s.n_atoms)
    return _rebuild(s, s.lattice, s.frac_coords[perm], s.numbers[perm], "atom_permutation")


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) float64 proper rotation, uniform (QR of a Gaussian matrix, det +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def rotation(s: Structure, rng: np.random.Generator) -> Structure:
    """Rotate the Cartesian frame: lattice rows @ R^T; fractional coordinates unchanged."""
    return _rebuild(s, s.lattice @ random_rotation(rng).T, s.frac_coords, s.numbers, "rotation")


def cell_choice(s: Structure, rng: np.random.Generator) -> Structure:
    """Another primitive cell of the same lattice: a' = a + n b, n in {-2, -1, 1, 2}.

    New lattice rows L' = M L with the unimodular M; coordinates f' = f M^-1 (wrapped).
    """
    m = np.eye(3)
    m[0, 1] = float(rng.choice([-2, -1, 1, 2]))
    frac = (s.frac_coords @ np.linalg.inv(m)) % 1.0
    return _rebuild(s, m @ s.lattice, frac, s.numbers, "cell_choice")


def supercell(s: Structure, reps: Sequence[int], suffix: str = "supercell") -> Structure:
    """The ``reps`` = (na, nb, nc) supercell; atoms ordered image by image."""
    reps_arr = np.asarray(reps, dtype=np.int64)
    if reps_arr.shape != (3,) or (reps_arr < 1).any():
        raise ValueError(f"reps: expected three integers >= 1, got {reps!r}")
    shifts = np.stack(np.meshgrid(*[np.arange(n) for n in reps_arr], indexing="ij"), -1)
    shifts = shifts.reshape(-1, 3)  # (n_images, 3)
    frac = ((s.frac_coords[None, :, :] + shifts[:, None, :]) / reps_arr).reshape(-1, 3)
    numbers = np.tile(s.numbers, len(shifts))
    return _rebuild(s, s.lattice * reps_arr[:, None], frac, numbers, suffix)


FAMILIES: dict[str, Callable[[Structure, np.random.Generator], Structure]] = {
    "axis_swap": axis_swap,
    "origin_shift": origin_shift,
    "atom_permutation": atom_permutation,
    "rotation": rotation,
    "cell_choice": cell_choice,
    "supercell_221": lambda s, rng: supercell(s, (2, 2, 1), "supercell_221"),
    "supercell_222": lambda s, rng: supercell(s, (2, 2, 2), "supercell_222"),
}
#: families that give the same description every time (one variant is enough)
DETERMINISTIC = ("supercell_221", "supercell_222")


def transform(s: Structure, family: str, rng: np.random.Generator) -> Structure:
    """One equivalent description of the periodic crystal ``s`` from transformation ``family``."""
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {sorted(FAMILIES)}, got {family!r}")
    _check_periodic(s)
    return FAMILIES[family](s, rng)


@dataclass
class SymmetryConfig:
    """Options of the symmetry study.

    Attributes:
        families: transformation families to apply (keys of ``FAMILIES``).
        n_variants: random descriptions per structure and family (1 for deterministic ones).
        seed: seed of the ``np.random.Generator`` drawing the transformations.
        tta: prediction modes to report (True = averaged over axis-swap orders).
        batch_size: structures per prediction batch.
    """

    families: tuple[str, ...] = tuple(FAMILIES)
    n_variants: int = 4
    seed: int = 0
    tta: tuple[bool, ...] = (False, True)
    batch_size: int = 128

    def __post_init__(self) -> None:
        self.families = tuple(self.families)
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"families: expected names from {sorted(FAMILIES)}, got {unknown}")
        if isinstance(self.n_variants, bool) or not isinstance(self.n_variants, int) \
                or self.n_variants < 1:
            raise ValueError(f"n_variants: expected an int >= 1, got {self.n_variants!r}")


@dataclass
class Variants:
    """Equivalent descriptions: ``structures`` and, for each, its original's position."""

    structures: list[Structure] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)


def make_variants(structures: Sequence[Structure], family: str, n_variants: int,
                  rng: np.random.Generator) -> Variants:
    """The originals (owner i) followed by ``n_variants`` descriptions of each."""
    out = Variants(list(structures), list(range(len(structures))))
    n = 1 if family in DETERMINISTIC else n_variants
    for i, s in enumerate(structures):
        for v in range(n):
            t = transform(s, family, rng)
            out.structures.append(dataclasses.replace(t, id=f"{t.id}{v}"))
            out.owner.append(i)
    return out


def spread(pred: np.ndarray, owner: np.ndarray, n_structures: int) -> np.ndarray:
    """(S, T) population std of the predictions (R, T) grouped by ``owner`` (R,)."""
    count = np.bincount(owner, minlength=n_structures).astype(np.float64)[:, None]
    mean = np.zeros((n_structures, pred.shape[1]))
    np.add.at(mean, owner, pred)
    mean /= count
    var = np.zeros_like(mean)
    np.add.at(var, owner, (pred - mean[owner]) ** 2)
    return np.sqrt(var / count)


def symmetry_spread(
    model: torch.nn.Module,
    structures: Sequence[Structure],
    targets: Sequence[str],
    featurizer: FeaturizerConfig,
    config: SymmetryConfig | None = None,
) -> list[dict[str, Any]]:
    """Spread of ``model``'s predictions per family, prediction mode and target.

    Returns rows ``{family, tta, target, n_structures, n_descriptions, mean_std, max_std}``
    (std in the target's units). Structures that fail to featurize are left out (counted).
    """
    from fastgap.features import featurize_structures
    from fastgap.model import predict_batch

    config = config or SymmetryConfig()
    structures = list(structures)
    if not structures:
        raise ValueError("structures: expected at least one periodic crystal, got none")
    rng = np.random.default_rng(config.seed)
    rows = []
    for family in config.families:
        var = make_variants(structures, family, config.n_variants, rng)
        batch, rejects = featurize_structures(var.structures, featurizer)
        failed = {r.id for r in rejects}
        owner = np.array([o for s, o in zip(var.structures, var.owner) if s.id not in failed])
        bad = {var.owner[i] for i, s in enumerate(var.structures) if s.id in failed}
        for tta in config.tta:
            pred = predict_batch(model, batch, tta=tta, batch_size=config.batch_size)
            std = spread(pred, owner, len(structures))
            keep = np.array([i not in bad for i in range(len(structures))])
            for j, name in enumerate(targets):
                rows.append({
                    "family": family, "tta": bool(tta), "target": name,
                    "n_structures": int(keep.sum()), "n_descriptions": len(owner),
                    "mean_std": float(std[keep, j].mean()) if keep.any() else float("nan"),
                    "max_std": float(std[keep, j].max()) if keep.any() else float("nan"),
                })  # fmt: skip
    return rows
