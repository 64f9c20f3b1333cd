"""The Zarr feature store: round trip, NaN back-fill, crash repair and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from fastgap.features import FeaturizedBatch, FeaturizerConfig, featurize_structures
from fastgap.readers import read_structures
from fastgap.store import SCHEMA_VERSION, Store

DATA = Path(__file__).parent / "data" / "featurize"
CONFIG = FeaturizerConfig(k=19, backend="reference")
FIELDS = ("ids", "atom_ptr", "lattice", "pbc", "numbers", "frac_coords", "nbr_numbers",
          "nbr_distances", "nbr_counts", "nbr_indices", "sources")


@pytest.fixture(scope="module")
def batch() -> FeaturizedBatch:
    batch, rejects = featurize_structures(list(read_structures([DATA / "mp12.jsonl"])), CONFIG)
    assert rejects == []
    return batch


def assert_same(got: FeaturizedBatch, want: FeaturizedBatch) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
        assert getattr(got, name).dtype == getattr(want, name).dtype, name
    assert sorted(got.properties) == sorted(want.properties)
    for name, values in want.properties.items():
        np.testing.assert_array_equal(got.properties[name], values, err_msg=name)


def test_round_trip_in_two_appends(tmp_path: Path, batch: FeaturizedBatch) -> None:
    store = Store.create(tmp_path / "s.zarr", CONFIG)
    store.append(batch.select(np.arange(5)))
    store.append(batch.select(np.arange(5, 12)))
    opened = Store.open(tmp_path / "s.zarr")
    assert opened.n_structures == 12 and opened.n_atoms == batch.n_atoms
    assert list(opened.ids) == list(batch.ids)
    assert_same(opened.load(), batch)
    assert_same(opened.load([9, 3, 4]), batch.select([9, 3, 4]))
    assert_same(FeaturizedBatch.concat(list(opened.iter_batches(5))), batch)
    attrs = opened.attrs
    assert attrs["schema_version"] == SCHEMA_VERSION
    assert attrs["featurizer"] == CONFIG.to_dict() and attrs["fastgap_version"]
    assert attrs["created"] <= attrs["updated"]


@pytest.mark.parametrize("window", [1, 40, 10**9])
def test_iter_batches_reads_windows_and_hands_out_batches(
    tmp_path: Path, batch: FeaturizedBatch, window: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches are the same whatever the read window (one batch, several, the whole store)."""
    import fastgap.store

    monkeypatch.setattr(fastgap.store, "READ_WINDOW_ATOMS", window)
    store = Store.create(tmp_path / "s.zarr", CONFIG)
    store.append(batch)
    opened = Store.open(tmp_path / "s.zarr")
    got = list(opened.iter_batches(5))
    assert [b.n_structures for b in got] == [5, 5, 2]
    for start, b in zip((0, 5, 10), got):
        assert_same(b, batch.select(np.arange(start, start + b.n_structures)))
    lean = list(opened.iter_batches(5, nbr_indices=False, properties=False))
    assert all(b.nbr_indices is None and b.properties == {} for b in lean)
    assert got[0].properties  # the store has labels: skipped above, read by default
    np.testing.assert_array_equal(lean[1].nbr_distances, got[1].nbr_distances)


def test_slice_equals_select_and_checks_bounds(batch: FeaturizedBatch) -> None:
    assert_same(batch.slice(3, 9), batch.select(np.arange(3, 9)))
    assert batch.slice(4, 4).n_structures == 0
    with pytest.raises(ValueError, match=r"slice: expected 0 <= lo <= hi <= 12, got 5, 13"):
        batch.slice(5, 13)


def test_property_first_seen_later_is_backfilled(tmp_path: Path, batch: FeaturizedBatch) -> None:
    first = batch.select(np.arange(4))
    first.properties = {"band_gap_eV": first.properties["band_gap_eV"]}
    second = batch.select(np.arange(4, 8))
    second.properties["new_prop"] = np.arange(4, dtype=np.float64)
    second.properties.pop("band_gap_eV")
    store = Store.create(tmp_path / "s.zarr", CONFIG)
    store.append(first)
    store.append(second)
    loaded = Store.open(tmp_path / "s.zarr").load()
    assert "new_prop" in Store.open(tmp_path / "s.zarr").property_names
    np.testing.assert_array_equal(loaded.properties["new_prop"], [np.nan] * 4 + [0, 1, 2, 3])
    np.testing.assert_array_equal(loaded.properties["band_gap_eV"][4:], [np.nan] * 4)


def test_uncommitted_rows_are_invisible_and_repaired(tmp_path: Path, batch: FeaturizedBatch) -> None:
    path = tmp_path / "s.zarr"
    Store.create(path, CONFIG).append(batch.select(np.arange(6)))
    # a crash after the data arrays grew but before the commit: garbage past the length
    group = zarr.open_group(str(path), mode="r+")
    for name in ("ids", "numbers", "nbr_distances"):
        arr = group[name]
        arr.resize((arr.shape[0] + 3, *arr.shape[1:]))
    group["ids"][6:9] = np.array(["junk1", "junk2", "junk3"])
    assert list(Store.open(path).ids) == list(batch.ids[:6])
    store = Store.open_append(path, CONFIG)
    assert group["ids"].shape == (6,) and group["numbers"].shape == (batch.atom_ptr[6],)
    store.append(batch.select(np.arange(6, 12)))
    assert_same(Store.open(path).load(), batch)


def test_refusals(tmp_path: Path, batch: FeaturizedBatch) -> None:
    path = tmp_path / "s.zarr"
    Store.create(path, CONFIG).append(batch.select([0]))
    with pytest.raises(FileExistsError, match="a store already exists"):
        Store.create(path, CONFIG)
    with pytest.raises(ValueError, match="featurizer: the store .* was featurized with"):
        Store.open_append(path, FeaturizerConfig(k=12))
    Store.open_append(path, FeaturizerConfig(k=19, backend="numba"))  # same features
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="is a non-empty directory"):
        Store.create(tmp_path / "other", CONFIG)
    with pytest.raises(FileNotFoundError, match="no fastgap store"):
        Store.open(tmp_path / "missing.zarr")
    reader = Store.open(path)
    with pytest.raises(ValueError, match="opened read-only"):
        reader.append(batch)
    with pytest.raises(ValueError, match=r"indices: expected 1-D positions in \[0, 1\)"):
        reader.load([1])
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1"):
        next(reader.iter_batches(0))
    small, _ = featurize_structures([], FeaturizerConfig(k=3))
    with pytest.raises(ValueError, match="batch: expected k=19, got k=3"):
        Store.open_append(path, CONFIG).append(small)
    meta = path / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["schema_version"] = SCHEMA_VERSION + 1
    meta.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="schema_version: the store .* has schema version 3"):
        Store.open(path)
    with pytest.raises(ValueError, match="schema_version"):
        Store.open_append(path, CONFIG)
    del doc["attributes"]["n_atoms"]
    doc["attributes"]["schema_version"] = SCHEMA_VERSION
    meta.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="lacks root attribute 'n_atoms'"):
        Store.open(path)


def test_empty_store_and_empty_subset(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "s.zarr", CONFIG)
    store.append(FeaturizedBatch.empty(19))
    opened = Store.open(tmp_path / "s.zarr")
    assert opened.n_structures == 0 and list(opened.iter_batches(4)) == []
    assert opened.load().n_structures == 0 and opened.load([]).n_structures == 0
