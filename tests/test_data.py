"""Atom orders, the masked collate and the bucketing sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastgap.data import (
    ALL_VARIANTS,
    BucketBatchSampler,
    StructureDataset,
    atom_orders,
    collate,
)
from fastgap.synthetic import synthetic_featurized


def _batch(n: int = 40, seed: int = 0, **kw):
    return synthetic_featurized(n, np.random.default_rng(seed), **kw)


def test_orders_sort_wrapped_coordinates_with_tolerance() -> None:
    frac = np.array([[0.5, 0.2, 0.0], [0.99999999, 0.1, 0.0], [0.5, 0.1, 0.3], [0.2, 0.9, 0.1]])
    orders, keep = atom_orders(frac, np.array([0, 4]), np.ones((1, 3), bool))
    # 0.99999999 wraps to 0 (within ORDER_TOL), so atom 1 comes first
    assert orders[0].tolist() == [1, 3, 2, 0]
    assert orders[1].tolist() == [1, 2, 0, 3]  # swap xy: sort by (y, x, z)
    assert keep.tolist() == [[True, True, True, True]]


def test_identical_orders_are_deduplicated() -> None:
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])  # every setting gives 0, 1
    _, keep = atom_orders(frac, np.array([0, 2]), np.ones((1, 3), bool))
    assert keep.tolist() == [[True, False, False, False]]


def test_collate_shapes_masks_and_variants() -> None:
    ds = StructureDataset(_batch(molecule_fraction=0.5), ["band_gap_eV"])
    items = [ds[(i, ALL_VARIANTS)] for i in range(5)]
    b = collate(items)
    n_atoms = int(ds.n_atoms[:5].sum())
    assert b.atom_numbers.shape == (n_atoms, 20)
    assert b.seq_struct.tolist() == np.repeat(np.arange(5), ds.n_variants[:5]).tolist()
    # every atom appears exactly once in each of its structure's sequences
    for q in range(len(b.seq_lengths)):
        rows = b.seq_atoms[q, : b.seq_lengths[q]]
        assert len(set(rows.tolist())) == len(rows)
    assert torch.equal(b.atom_lengths, ds.lengths[:n_atoms])
    assert (b.atom_distances[:, 0] == 0).all()


def test_collate_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least one dataset item"):
        collate([])


def test_unknown_target_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown target 'nope'"):
        StructureDataset(_batch(), ["nope"])


def test_sampler_is_seeded_and_covers_every_index() -> None:
    ds = StructureDataset(_batch(100))
    idx = np.arange(3, 100)
    a = list(BucketBatchSampler(ds, idx, 8, shuffle=True, seed=1, augment=True))
    b = list(BucketBatchSampler(ds, idx, 8, shuffle=True, seed=1, augment=True))
    c = list(BucketBatchSampler(ds, idx, 8, shuffle=True, seed=2, augment=True))
    assert a == b and a != c
    assert sorted(i for batch in a for i, _ in batch) == idx.tolist()
    assert all(0 <= v < ds.n_variants[i] for batch in a for i, v in batch)


def test_sampler_shards_for_ddp() -> None:
    ds = StructureDataset(_batch(100))
    full = BucketBatchSampler(ds, np.arange(100), 8, shuffle=True, seed=0)
    r0 = list(BucketBatchSampler(ds, np.arange(100), 8, shuffle=True, seed=0, shard=(0, 2)))
    r1 = list(BucketBatchSampler(ds, np.arange(100), 8, shuffle=True, seed=0, shard=(1, 2)))
    assert len(r0) == len(r1) == len(full) // 2
    assert not {i for b in r0 for i, _ in b} & {i for b in r1 for i, _ in b}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"batch_size": 0}, "batch_size: expected an integer >= 1"),
     ({"batch_size": 4, "augment": True, "tta": True}, "at most one of them")],
)
def test_sampler_validation(kwargs: dict, match: str) -> None:
    ds = StructureDataset(_batch())
    with pytest.raises(ValueError, match=match):
        BucketBatchSampler(ds, np.arange(10), shuffle=False, **kwargs)


def _rock_salt_and_random() -> object:
    from fastgap.features import featurize_structures
    from fastgap.structures import make_structure

    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    salt = make_structure(
        "NaCl", np.eye(3) * 5.64, np.vstack([fcc, fcc + [0.5, 0, 0]]) % 1.0, [11] * 4 + [17] * 4
    )
    rng = np.random.default_rng(3)
    odd = make_structure("odd", np.eye(3) * 6.0 + rng.normal(0, 0.2, (3, 3)),
                         rng.random((5, 3)), [8, 8, 22, 22, 3])
    batch, rejects = featurize_structures([salt, odd])
    assert not rejects
    return batch


def test_equivalent_atoms_share_rows_and_predictions_do_not_change() -> None:
    from fastgap.model import FastGapModel, ModelConfig, predict_dataset

    batch = _rock_salt_and_random()
    shared = StructureDataset(batch)
    plain = StructureDataset(batch, share_equivalent=False)
    # rock salt: 8 atoms, two distinct lists (Na, Cl); the random cell keeps all 5
    assert shared.rep_ptr.tolist() == [0, 2, 7]
    assert len(plain.numbers) == 13
    item = shared[(0, 0)]
    assert sorted(set(item["orders"][0].tolist())) == [0, 1]
    assert item["numbers"][:, 0].tolist() == [11, 17]
    torch.manual_seed(0)
    model = FastGapModel(ModelConfig())
    idx = np.arange(2)
    a = predict_dataset(model, shared, idx, tta=True)
    b = predict_dataset(model, plain, idx, tta=True)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
