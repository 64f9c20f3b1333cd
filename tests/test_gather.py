"""`fastgap.gather`: a whole batch at once equals the item-by-item masked collate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fastgap.data import ALL_VARIANTS, BucketBatchSampler, StructureDataset, collate, make_loader
from fastgap.gather import gather_batch
from fastgap.synthetic import synthetic_featurized


def _assert_same(got, want) -> None:
    for f in dataclasses.fields(want):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if b is None:
            assert a is None, f.name
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, f.name
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                     and torch.equal(a.nan_to_num(), b.nan_to_num())), f.name


@pytest.mark.parametrize("rows", [True, False], ids=["round2", "round1"])
@pytest.mark.parametrize("share", [True, False], ids=["shared", "own"])
def test_gather_equals_collate_of_items(rows: bool, share: bool) -> None:
    data = synthetic_featurized(30, np.random.default_rng(5), molecule_fraction=0.4,
                                with_indices=True)
    ds = StructureDataset(data, ["band_gap_eV"], neighbour_rows=rows, share_equivalent=share)
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = rng.choice(len(ds), size=int(rng.integers(1, 12)), replace=False)
        items = [(int(i), ALL_VARIANTS) if rng.random() < 0.5 else
                 (int(i), int(rng.integers(0, len(ds.variants[i])))) for i in idx]
        _assert_same(gather_batch(ds, items), collate([ds[it] for it in items]))
    _assert_same(gather_batch(ds, [3, 1]), collate([ds[3], ds[1]]))


def test_loader_uses_the_gather_and_checks_items() -> None:
    ds = StructureDataset(synthetic_featurized(20, np.random.default_rng(1)), ["band_gap_eV"])
    sampler = BucketBatchSampler(ds, np.arange(20), 6, shuffle=False, tta=True)
    for items, batch in zip(sampler, make_loader(ds, sampler)):
        _assert_same(batch, collate([ds[it] for it in items]))
    with pytest.raises(ValueError, match="items: expected at least one dataset item"):
        gather_batch(ds, [])
    with pytest.raises(IndexError, match=r"items: dataset indices must be in \[0, 20\)"):
        gather_batch(ds, [20])
    with pytest.raises(IndexError, match="variant 9 of structure 0"):
        gather_batch(ds, [(0, 9)])
