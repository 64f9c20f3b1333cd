"""Symmetry transformations give equivalent crystals; the spread statistic is right."""

from __future__ import annotations

import numpy as np
import pytest

from fastgap.neighbors import neighbor_lists
from fastgap.structures import Structure, from_cartesian, make_structure
from fastgap.symmetry import (
    FAMILIES,
    SymmetryConfig,
    make_variants,
    spread,
    supercell,
    symmetry_spread,
    transform,
)


def _signature(s: Structure, repeat: int = 1) -> np.ndarray:
    """(N*repeat, 1 + 2k) rows (centre Z, neighbour Z..., distances...) sorted."""
    nl = neighbor_lists(s.lattice, s.frac_coords, s.numbers, k=19, backend="reference")
    rows = np.concatenate(
        [s.numbers[:, None], nl.numbers.astype(np.float64), np.round(nl.distances, 6)], axis=1
    )
    rows = np.repeat(rows, repeat, axis=0)
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_transform_keeps_neighbour_sequences(crystals, family: str) -> None:
    rng = np.random.default_rng(3)
    for s in crystals:
        t = transform(s, family, rng)
        repeat = {"supercell_221": 4, "supercell_222": 8}.get(family, 1)
        assert t.n_atoms == s.n_atoms * repeat
        np.testing.assert_allclose(_signature(t), _signature(s, repeat), rtol=0, atol=2e-6)
        # same Cartesian volume per atom: the crystal, not a different one
        vol = abs(np.linalg.det(t.lattice)) / t.n_atoms
        assert vol == pytest.approx(abs(np.linalg.det(s.lattice)) / s.n_atoms, rel=1e-9)


def test_signature_detects_a_different_crystal(crystals) -> None:
    s = crystals[2]
    strained = make_structure("x", s.lattice * 1.01, s.frac_coords, s.numbers)
    assert not np.allclose(_signature(s), _signature(strained), rtol=0, atol=2e-6)


def test_transforms_change_the_description(crystals) -> None:
    rng = np.random.default_rng(0)
    s = crystals[2]
    for family in ("axis_swap", "origin_shift", "rotation", "cell_choice"):
        t = transform(s, family, rng)
        assert not (np.allclose(t.lattice, s.lattice) and np.allclose(t.frac_coords,
                                                                      s.frac_coords))


def test_transform_rejects_bad_input(crystals) -> None:
    s = crystals[0]
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="family: expected one of"):
        transform(s, "mirror", rng)
    mol = from_cartesian("m", [[0, 0, 0], [0, 0, 1.1]], [6, 8])
    with pytest.raises(ValueError, match="structure: expected a periodic crystal"):
        transform(mol, "origin_shift", rng)
    with pytest.raises(TypeError, match="structure: expected a fastgap Structure"):
        transform("nacl", "origin_shift", rng)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reps: expected three integers"):
        supercell(s, (2, 0, 1))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="families: expected names"):
        SymmetryConfig(families=("twist",))
    with pytest.raises(ValueError, match="n_variants: expected an int"):
        SymmetryConfig(n_variants=0)


def test_make_variants_counts_and_owners(crystals) -> None:
    var = make_variants(crystals, "origin_shift", 3, np.random.default_rng(0))
    assert len(var.structures) == 3 + 3 * 3
    assert var.owner == [0, 1, 2] + [0] * 3 + [1] * 3 + [2] * 3
    assert len({s.id for s in var.structures}) == len(var.structures)
    sup = make_variants(crystals, "supercell_222", 3, np.random.default_rng(0))
    assert len(sup.structures) == 6  # deterministic family: one description each


def test_spread_is_population_std_per_owner() -> None:
    pred = np.array([[1.0], [3.0], [5.0], [5.0], [2.0]])
    owner = np.array([0, 0, 1, 1, 0])
    out = spread(pred, owner, 2)
    np.testing.assert_allclose(out[:, 0], [np.std([1.0, 3.0, 2.0]), 0.0], rtol=1e-12)


def test_symmetry_spread_rows_with_a_tiny_model(crystals) -> None:
    import torch

    from fastgap.features import FeaturizerConfig
    from fastgap.model import FastGapModel, ModelConfig

    torch.manual_seed(0)
    model = FastGapModel(ModelConfig(embed_dim=4, atom_hidden=4, struct_hidden=4,
                                     head_sizes=(4,)))
    cfg = SymmetryConfig(families=("rotation", "origin_shift"), n_variants=2)
    rows = symmetry_spread(model, crystals, ["gap"], FeaturizerConfig(backend="reference"),
                           cfg)
    assert [(r["family"], r["tta"]) for r in rows] == [
        ("rotation", False), ("rotation", True), ("origin_shift", False), ("origin_shift", True)
    ]
    by = {(r["family"], r["tta"]): r for r in rows}
    # a rotation leaves the fractional coordinates and distances unchanged: same input
    assert by[("rotation", False)]["max_std"] == pytest.approx(0.0, abs=1e-6)
    assert by[("origin_shift", False)]["n_descriptions"] == 9
    with pytest.raises(ValueError, match="structures: expected at least one"):
        symmetry_spread(model, [], ["gap"], FeaturizerConfig(backend="reference"), cfg)
