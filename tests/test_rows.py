"""Round-2 rows: refined sharing, entry order inside ties, neighbour rows in the collate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fastgap.data import StructureDataset, collate
from fastgap.features import FeaturizedBatch, FeaturizerConfig, featurize_structures
from fastgap.model import FastGapModel, ModelConfig, predict_batch
from fastgap.readers import read_structures
from fastgap.structures import Structure

DATA = Path(__file__).parent / "data" / "featurize"
TINY = {"embed_dim": 8, "atom_hidden": 8, "struct_hidden": 8, "head_sizes": (8,)}


@pytest.fixture(scope="module")
def structures() -> list[Structure]:
    return list(read_structures([DATA / "mp12.jsonl"]))


def _featurize(structures: list[Structure]) -> FeaturizedBatch:
    batch, rejects = featurize_structures(structures, FeaturizerConfig(backend="reference"))
    assert rejects == []
    return batch


def _permuted(s: Structure, rng: np.random.Generator) -> Structure:
    p = rng.permutation(len(s.numbers))
    return Structure(s.id, s.lattice, s.frac_coords[p], s.numbers[p], source=s.source,
                     properties=s.properties)


def _inequivalent_tie() -> Structure:
    """Ti with two O at the same distance (a tie group); only one O has a Li next to it."""
    frac = np.array([[0.5, 0.5, 0.5], [0.7, 0.5, 0.5], [0.3, 0.5, 0.5], [0.85, 0.5, 0.5]])
    return Structure("tie", np.eye(3) * 10.0, frac, np.array([22, 8, 8, 3]), source="code")


def _hand_made() -> FeaturizedBatch:
    """One structure: atoms 0 and 1 have the same list (O: Si at 1.6 Å) but their Si
    neighbours (atoms 2 and 3) have different lists. k = 1."""
    return FeaturizedBatch(
        ids=np.array(["h"], dtype=object), atom_ptr=np.array([0, 4]),
        lattice=np.eye(3, dtype=np.float32)[None] * 5, pbc=np.ones((1, 3), bool),
        numbers=np.array([8, 8, 14, 14], np.uint8),
        frac_coords=np.array([[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]], np.float32),
        nbr_numbers=np.array([[14], [14], [8], [8]], np.uint8),
        nbr_distances=np.array([[1.6], [1.6], [1.6], [1.9]], np.float32),
        nbr_counts=np.ones(4, np.uint8), sources=np.array(["hand"], dtype=object),
        nbr_indices=np.array([[2], [3], [0], [1]], np.int32),
    ).validate()


def test_refined_key_splits_atoms_whose_neighbours_differ() -> None:
    ds = StructureDataset(_hand_made())
    assert ds.rep_ptr.tolist() == [0, 3]  # round 1: atoms 0 and 1 share a row
    assert ds.round_ptr.tolist() == [0, 4]  # round 2: they do not
    b = collate([ds[0]])
    # entries of each round-2 row: (own round-1 row, the neighbour's round-1 row)
    assert b.atom_nbr_rows.tolist() == [[0, 1], [0, 2], [1, 0], [2, 0]]


def test_collate_offsets_neighbour_rows_and_points_padding_at_a_dummy() -> None:
    one = _hand_made()
    mol = FeaturizedBatch.concat([one, one])
    mol.nbr_counts[0] = 0
    mol.nbr_numbers[0], mol.nbr_distances[0], mol.nbr_indices[0] = 0, 0.0, -1
    ds = StructureDataset(mol.validate())
    b = collate([ds[0], ds[1]])
    n = b.atom_numbers.shape[0]
    first = int(ds.round_ptr[1])
    assert b.atom_nbr_rows[0, 1] == n  # padding -> dummy row
    assert (b.atom_nbr_rows[first:] >= int(ds.rep_ptr[1])).all()  # second structure's rows
    head = b.atom_nbr_rows[:first]
    assert ((head < int(ds.rep_ptr[1])) | (head == n)).all()  # first structure's rows or dummy


def test_sharing_does_not_change_round_two(structures: list[Structure]) -> None:
    data = _featurize(structures)
    shared, alone = StructureDataset(data), StructureDataset(data, share_equivalent=False)
    assert shared.round_ptr[-1] < alone.round_ptr[-1]  # sharing still happens
    torch.manual_seed(0)
    model = FastGapModel(ModelConfig(**TINY, rounds=2)).double().eval()
    for i in range(len(shared)):
        got = model(_double(collate([shared[(i, -1)]])))
        want = model(_double(collate([alone[(i, -1)]])))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def _double(batch):
    batch.atom_distances = batch.atom_distances.double()
    return batch


@pytest.mark.parametrize("rounds", [1, 2])
def test_predictions_do_not_depend_on_atom_order(structures: list[Structure], rounds: int) -> None:
    rng = np.random.default_rng(5)
    data = _featurize(structures)
    shuffled = _featurize([_permuted(s, rng) for s in structures])
    torch.manual_seed(1)
    model = FastGapModel(ModelConfig(**TINY, rounds=rounds)).double().eval()
    got = predict_batch(model, shuffled, tta=True)
    np.testing.assert_allclose(got, predict_batch(model, data, tta=True), rtol=0, atol=1e-9)


def test_entry_order_inside_a_tie_does_not_depend_on_atom_order() -> None:
    """Ti's two O at 2 Å are a tie ordered by index; round 2 sorts them by their lists.

    k = 6 ends the lists at a shell boundary: truncating inside a tie of equal atomic
    number picks neighbours by index (the neighbour-list contract), which no later stage
    can undo.
    """
    swapped = _inequivalent_tie()  # the two O swapped: the tie's index order flips
    swapped.frac_coords[[1, 2]] = swapped.frac_coords[[2, 1]]
    config = FeaturizerConfig(k=6, backend="reference")
    one, _ = featurize_structures([_inequivalent_tie()], config)
    two, _ = featurize_structures([swapped], config)
    assert one.nbr_indices[0, :2].tolist() == [1, 2] and two.nbr_indices[0, :2].tolist() == [2, 1]
    torch.manual_seed(1)
    model = FastGapModel(ModelConfig(**TINY, rounds=2)).double().eval()
    got, want = predict_batch(model, two, tta=True), predict_batch(model, one, tta=True)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_compiled_grouping_equals_the_numpy_one() -> None:
    """The core's grouping (cpp/fastgap_rows.hpp) against the NumPy oracle: lists copied
    within and across structures, distances a rounding step apart, short lists, garbage past
    the length, an empty structure."""
    from fastgap.rows import shared_rows

    rng = np.random.default_rng(7)
    counts = rng.integers(1, 30, 300)
    counts[5] = 0
    ptr = np.concatenate([[0], np.cumsum(counts)])
    n, width = int(ptr[-1]), 20
    numbers = rng.integers(1, 4, (n, width))
    # at the centres of the rounding steps, so that a 2e-5 Å move stays in its step
    distances = (np.sort(rng.integers(5000, 60000, (n, width)), axis=1) * 1e-4).astype(np.float32)
    lengths = np.where(rng.random(n) < 0.2, rng.integers(1, width, n), width)
    # about half of the atoms copy the list of an atom of their structure (or of another)
    struct = np.repeat(np.arange(len(counts)), counts)
    dst = rng.choice(n, n // 2, replace=False)
    src = ptr[struct[dst]] + rng.integers(0, counts[struct[dst]])
    src[:40] = rng.integers(0, n, 40)
    numbers[dst], distances[dst], lengths[dst] = numbers[src], distances[src], lengths[src]
    distances[dst[:60], 3] += np.float32(2e-5)  # within the rounding step: still shared
    distances[dst[60:80], 5] += np.float32(1.2e-4)  # the next step: no longer shared
    past = np.arange(width)[None, :] >= lengths[:, None]
    numbers[past], distances[past] = rng.integers(0, 200, past.sum()), np.inf
    want = shared_rows(numbers, distances, lengths, ptr, compiled=False)
    got = shared_rows(numbers, distances, lengths, ptr)
    assert (~want[0]).sum() > 100  # plenty of shared rows
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_compiled_grouping_checks_its_input() -> None:
    from fastgap import _core

    numbers, distances = np.ones((2, 3), np.int64), np.ones((2, 3), np.float32)
    lengths, ptr = np.array([3, 3]), np.array([0, 2])
    with pytest.raises(ValueError, match=r"lengths: expected 0..3, row 1 has 4"):
        _core.group_lists(numbers, distances, np.array([3, 4]), ptr, 1e-4)
    with pytest.raises(ValueError, match="atom_ptr: expected offsets from 0 to 2"):
        _core.group_lists(numbers, distances, lengths, np.array([0, 1]), 1e-4)
    with pytest.raises(ValueError, match="tol: expected a finite value > 0"):
        _core.group_lists(numbers, distances, lengths, ptr, 0.0)
    with pytest.raises(ValueError, match="distances: expected the shape of numbers"):
        _core.group_lists(numbers, distances[:, :2].copy(), lengths, ptr, 1e-4)
