"""nbr_indices in FeaturizedBatch and the store (schema 2); schema-1 stores stay readable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fastgap.data import StructureDataset
from fastgap.features import FeaturizedBatch, FeaturizerConfig, featurize_structures
from fastgap.model import FastGapModel, ModelConfig, predict_batch
from fastgap.neighbors import neighbor_lists
from fastgap.readers import read_structures
from fastgap.store import Store

DATA = Path(__file__).parent / "data" / "featurize"
CONFIG = FeaturizerConfig(k=19, backend="reference")


@pytest.fixture(scope="module")
def batch() -> FeaturizedBatch:
    structures = list(read_structures([DATA / "mp12.jsonl"]))
    batch, rejects = featurize_structures(structures, CONFIG)
    assert rejects == []
    return batch


def test_nbr_indices_are_the_neighbour_lists_indices(batch: FeaturizedBatch) -> None:
    structures = list(read_structures([DATA / "mp12.jsonl"]))
    for s, structure in enumerate(structures):
        nl = neighbor_lists(structure.lattice, structure.frac_coords, structure.numbers,
                            k=19, backend="reference")
        a0, a1 = batch.atom_ptr[s], batch.atom_ptr[s + 1]
        np.testing.assert_array_equal(batch.nbr_indices[a0:a1], nl.indices)
    assert batch.nbr_indices.dtype == np.int32


def test_select_and_concat_keep_indices(batch: FeaturizedBatch) -> None:
    parts = [batch.select([3, 1]), batch.select([0])]
    joined = FeaturizedBatch.concat(parts).validate()
    want = np.concatenate([p.nbr_indices for p in parts])
    np.testing.assert_array_equal(joined.nbr_indices, want)
    old = FeaturizedBatch.concat([_schema1(batch.select([0])), _schema1(batch.select([1]))])
    assert old.nbr_indices is None
    with pytest.raises(ValueError, match="batches: expected all or none to carry nbr_indices"):
        FeaturizedBatch.concat([batch.select([0]), _schema1(batch.select([1]))])


def _schema1(b: FeaturizedBatch) -> FeaturizedBatch:
    b = b.select(np.arange(b.n_structures))
    b.nbr_indices = None
    return b


@pytest.mark.parametrize(
    ("change", "match"),
    [("dtype", r"nbr_indices: expected shape .* dtype int32"),
     ("range", r"nbr_indices: expected local atom indices in \[0, n_atoms\)"),
     ("padding", r"nbr_indices: expected local atom indices .* -1 after them")],
)
def test_nbr_indices_validation(batch: FeaturizedBatch, change: str, match: str) -> None:
    b = batch.select([0, 1])
    if change == "dtype":
        b.nbr_indices = b.nbr_indices.astype(np.int64)
    elif change == "range":
        b.nbr_indices[0, 0] = b.atom_ptr[1]  # an atom of the next structure
    else:
        b.nbr_counts[0] -= 1  # the last valid entry becomes padding that is not -1
    with pytest.raises(ValueError, match=match):
        b.validate()


def _make_schema1(path: Path) -> None:
    """Turn a schema-2 store into what fastgap wrote before nbr_indices existed."""
    shutil.rmtree(path / "nbr_indices")
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = 1
    (path / "zarr.json").write_text(json.dumps(meta))


def test_schema1_store_reads_without_indices(tmp_path: Path, batch: FeaturizedBatch) -> None:
    store = Store.create(tmp_path / "s.zarr", CONFIG)
    store.append(batch)
    assert Store.open(tmp_path / "s.zarr").load().nbr_indices is not None
    _make_schema1(tmp_path / "s.zarr")
    old = Store.open(tmp_path / "s.zarr")
    assert old.schema_version == 1 and not old.has_nbr_indices
    loaded = old.load()
    assert loaded.nbr_indices is None
    np.testing.assert_array_equal(loaded.nbr_distances, batch.nbr_distances)
    assert old.load([]).nbr_indices is None
    assert all(b.nbr_indices is None for b in old.iter_batches(5))
    rounds1 = FastGapModel(ModelConfig(embed_dim=4, atom_hidden=4, struct_hidden=4))
    assert np.isfinite(predict_batch(rounds1, loaded)).all()
    rounds2 = FastGapModel(ModelConfig(embed_dim=4, atom_hidden=4, struct_hidden=4, rounds=2))
    with pytest.raises(ValueError, match="rounds=2 .* re-featurize"):
        predict_batch(rounds2, loaded)
    assert StructureDataset(loaded).round_entries is None


def test_schema1_store_is_not_appended_to(tmp_path: Path, batch: FeaturizedBatch) -> None:
    Store.create(tmp_path / "s.zarr", CONFIG).append(batch.select([0]))
    _make_schema1(tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="schema version 1 .* re-featurize into a new store"):
        Store.open_append(tmp_path / "s.zarr", CONFIG)


def test_batch_without_indices_is_not_appended(tmp_path: Path, batch: FeaturizedBatch) -> None:
    store = Store.create(tmp_path / "s.zarr", CONFIG)
    with pytest.raises(ValueError, match=r"batch: expected nbr_indices \(store schema 2\)"):
        store.append(_schema1(batch.select([0])))
