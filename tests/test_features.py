"""FeaturizedBatch helpers and featurize_structures against direct neighbour-list calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastgap.features import FeaturizedBatch, FeaturizerConfig, featurize_structures
from fastgap.neighbors import neighbor_lists
from fastgap.readers import read_structures
from fastgap.structures import Structure

DATA = Path(__file__).parent / "data" / "featurize"
CONFIG = FeaturizerConfig(k=19, backend="reference")


@pytest.fixture(scope="module")
def structures() -> list[Structure]:
    return list(read_structures([DATA / "mp12.jsonl"]))


def _overlapping(id_: str = "bad") -> Structure:
    frac = np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0]])
    return Structure(id_, np.eye(3) * 4.0, frac, np.array([11, 17]), source="code")


def _molecule() -> Structure:
    frac = np.array([[0.5, 0.5, 0.5], [0.55, 0.5, 0.5], [0.5, 0.55, 0.5]])
    return Structure("h2o", np.eye(3) * 20.0, frac, np.array([8, 1, 1]), (False,) * 3,
                     {"gap": 7.0}, "code")


def test_matches_single_structure_neighbor_lists(structures: list[Structure]) -> None:
    batch, rejects = featurize_structures(structures, CONFIG)
    assert rejects == []
    batch.validate()
    assert list(batch.ids) == [s.id for s in structures]
    for i, s in enumerate(structures):
        nl = neighbor_lists(s.lattice, s.frac_coords, s.numbers, k=19, backend="reference")
        a, b = batch.atom_ptr[i], batch.atom_ptr[i + 1]
        np.testing.assert_array_equal(batch.nbr_numbers[a:b], nl.numbers)
        np.testing.assert_allclose(batch.nbr_distances[a:b], nl.distances, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(batch.numbers[a:b], s.numbers)
        np.testing.assert_allclose(batch.lattice[i], s.lattice, rtol=1e-6)


def test_bad_structure_is_rejected_and_the_rest_go_on(structures: list[Structure]) -> None:
    mixed = structures[:5] + [_overlapping()] + structures[5:]
    batch, rejects = featurize_structures(mixed, CONFIG)
    assert [r.id for r in rejects] == ["bad"]
    assert "closer than" in rejects[0].reason and rejects[0].source == "code"
    good, _ = featurize_structures(structures, CONFIG)
    assert list(batch.ids) == list(good.ids)
    np.testing.assert_array_equal(batch.nbr_numbers, good.nbr_numbers)
    np.testing.assert_array_equal(batch.nbr_distances, good.nbr_distances)


def test_molecule_padding_and_properties() -> None:
    batch, rejects = featurize_structures([_molecule()], FeaturizerConfig(k=4, backend="reference"))
    assert rejects == []
    np.testing.assert_array_equal(batch.nbr_counts, [2, 2, 2])
    assert (batch.nbr_numbers[:, 2:] == 0).all() and (batch.nbr_distances[:, 2:] == 0).all()
    assert not batch.pbc.any()
    assert batch.properties["gap"].tolist() == [7.0]


def test_frac_coords_wrapped_on_periodic_axes() -> None:
    frac = np.array([[-0.25, 1.5, 0.0], [0.5, 0.5, 1.0 - 1e-12]])
    s = Structure("w", np.eye(3) * 5.0, frac, np.array([3, 9]))
    batch, _ = featurize_structures([s], CONFIG)
    assert batch.frac_coords.dtype == np.float32
    assert ((batch.frac_coords >= 0) & (batch.frac_coords < 1)).all()
    np.testing.assert_allclose(batch.frac_coords[0], [0.75, 0.5, 0.0])


def test_empty_input() -> None:
    batch, rejects = featurize_structures([], CONFIG)
    assert batch.n_structures == 0 and rejects == []
    batch.validate()


def test_select_and_concat_round_trip(structures: list[Structure]) -> None:
    batch, _ = featurize_structures(structures, CONFIG)
    again = FeaturizedBatch.concat([batch.select([0, 1, 2]), batch.select(np.arange(3, 12))])
    for name in ("ids", "atom_ptr", "numbers", "frac_coords", "nbr_numbers", "nbr_distances"):
        np.testing.assert_array_equal(getattr(again, name), getattr(batch, name))
    picked = batch.select([7, 2])
    assert list(picked.ids) == [structures[7].id, structures[2].id]
    a, b = batch.atom_ptr[7], batch.atom_ptr[8]
    np.testing.assert_array_equal(picked.nbr_numbers[: b - a], batch.nbr_numbers[a:b])
    mask = np.zeros(12, dtype=bool)
    mask[[1, 4]] = True
    assert list(batch.select(mask).ids) == [structures[1].id, structures[4].id]


def test_concat_unions_properties_with_nan() -> None:
    mol, _ = featurize_structures([_molecule()], FeaturizerConfig(k=4, backend="reference"))
    cell = Structure("c", np.eye(3) * 3.0, np.zeros((1, 3)), np.array([29]), properties={"e": 1.0})
    other, _ = featurize_structures([cell], FeaturizerConfig(k=4, backend="reference"))
    both = FeaturizedBatch.concat([mol, other])
    np.testing.assert_array_equal(both.properties["gap"], [7.0, np.nan])
    np.testing.assert_array_equal(both.properties["e"], [np.nan, 1.0])


def test_validation_errors(structures: list[Structure]) -> None:
    batch, _ = featurize_structures(structures[:2], CONFIG)
    with pytest.raises(ValueError, match="k: expected an int in 1..255"):
        FeaturizerConfig(k=0)
    with pytest.raises(ValueError, match="backend: expected one of"):
        FeaturizerConfig(backend="gpu")
    with pytest.raises(ValueError, match="num_threads: expected an int >= 0"):
        FeaturizerConfig(num_threads=-1)
    with pytest.raises(TypeError, match="config: expected FeaturizerConfig"):
        featurize_structures(structures, {"k": 19})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batches: expected at least one"):
        FeaturizedBatch.concat([])
    small, _ = featurize_structures(structures[:1], FeaturizerConfig(k=3, backend="reference"))
    with pytest.raises(ValueError, match="batches: expected one k"):
        FeaturizedBatch.concat([batch, small])
    with pytest.raises(ValueError, match="idx: boolean mask must have shape"):
        batch.select(np.ones(5, dtype=bool))
    batch.numbers = batch.numbers.astype(np.int64)
    with pytest.raises(ValueError, match="numbers: expected shape"):
        batch.validate()
    fixed, _ = featurize_structures(structures[:2], CONFIG)
    fixed.atom_ptr = fixed.atom_ptr[::-1].copy()
    with pytest.raises(ValueError, match="atom_ptr: expected 0, strictly increasing"):
        fixed.validate()
    fixed, _ = featurize_structures(structures[:2], CONFIG)
    fixed.properties["x"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"properties\['x'\]"):
        fixed.validate()
    fixed.properties.pop("x")
    fixed.nbr_counts[0] = 30
    with pytest.raises(ValueError, match="nbr_counts: expected values <= k"):
        fixed.validate()
