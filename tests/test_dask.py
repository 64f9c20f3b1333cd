"""The dask.distributed path gives the same store, rejects and accounting as the pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastgap.dask_featurize import featurize_dask
from fastgap.features import FeaturizerConfig
from fastgap.featurize import FeaturizeConfig, featurize
from fastgap.store import Store

DATA = Path(__file__).parent / "data" / "featurize"


def test_dask_local_cluster_matches_pool(tmp_path: Path) -> None:
    lines = (DATA / "mp12.jsonl").read_text().splitlines()
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([*lines, lines[2], '{"id": "broken"}']) + "\n")
    config = FeaturizeConfig(featurizer=FeaturizerConfig(backend="reference"), workers=2,
                             chunk_size=3, flush_atoms=16, progress=False)
    summary = featurize_dask([src], tmp_path / "d.zarr", config, processes=False)
    assert (summary.inputs, summary.written, summary.rejected, summary.skipped) == (14, 12, 2, 0)
    ref_config = FeaturizeConfig(featurizer=FeaturizerConfig(backend="reference"), workers=0,
                                 progress=False)
    featurize([src], tmp_path / "p.zarr", ref_config)
    got, want = Store.open(tmp_path / "d.zarr").load(), Store.open(tmp_path / "p.zarr").load()
    assert list(got.ids) == list(want.ids)
    for name in ("atom_ptr", "numbers", "nbr_numbers", "nbr_distances", "frac_coords"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert (tmp_path / "d.zarr" / "rejects.csv").read_text() == (
        tmp_path / "p.zarr" / "rejects.csv"
    ).read_text()
    again = featurize_dask([src], tmp_path / "d.zarr", config, processes=False)
    assert (again.written, again.rejected, again.skipped) == (0, 0, 14)


def test_address_type_is_checked(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="address: expected a scheduler address"):
        featurize_dask([DATA / "mp12.jsonl"], tmp_path / "d.zarr", address=8786)  # type: ignore[arg-type]
