"""Screening: order and ids, rejects, files vs store, bundles, objects, Parquet, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fastgap.applicability import trained_periodicity
from fastgap.ensemble import BUNDLE_FORMAT, combine, default_bundle_dir, load_bundle
from fastgap.features import FeaturizerConfig
from fastgap.screening import PredictConfig, predict, predict_to_file

DATA = Path(__file__).parent / "data" / "predict"
EXAMPLES = Path(__file__).parents[1] / "fastgap" / "examples" / "cifs"
CFG = PredictConfig(workers=0, progress=False, batch_size=64, chunk_size=40)


def _cifs(n: int) -> list[Path]:
    return sorted(EXAMPLES.glob("*.cif"))[:n]


def test_unlabelled_files_keep_order_and_ids(bundle, tmp_path: Path) -> None:
    files = _cifs(9)[::-1]  # not sorted: the output must follow the input order
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    df = predict([tmp_path / f.name for f in files], bundle, CFG)
    assert list(df["id"]) == [f.stem for f in files]
    assert list(df.columns) == ["id", "band_gap_eV", "p_metal", "band_gap_std_eV",
                                "band_gap_regressor_eV"]
    assert np.isfinite(df[["band_gap_eV", "p_metal", "band_gap_std_eV"]].to_numpy()).all()
    assert (df["band_gap_eV"] >= 0).all()


def test_combination_rule() -> None:
    gaps = np.array([[1.0, -0.5, 2.0, 3.0], [3.0, -0.1, 2.0, 1.0]])  # (M=2, S=4)
    p = np.array([[0.9, 0.1, 0.5, 0.0]])
    cols = combine(gaps, p, 4)
    assert list(cols) == ["band_gap_eV", "p_metal", "band_gap_std_eV", "band_gap_regressor_eV"]
    np.testing.assert_allclose(cols["band_gap_regressor_eV"], [2.0, -0.3, 2.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(cols["band_gap_std_eV"], [1.0, 0.2, 0.0, 1.0], atol=1e-12)
    # p_metal >= 0.5 -> 0; a negative mixture median -> 0; p_metal = 0 -> the mean
    np.testing.assert_allclose(cols["band_gap_eV"], [0.0, 0.0, 0.0, 2.0], rtol=0, atol=0)
    alone = combine(gaps[:1], None, 4)  # no classifier: clipped regression, p_metal NaN
    assert "band_gap_std_eV" not in alone and np.isnan(alone["p_metal"]).all()
    np.testing.assert_allclose(alone["band_gap_eV"], [1.0, 0.0, 2.0, 3.0], atol=0)
    one = combine(gaps[:1], p, 4)  # one regressor: no std, threshold then clip
    np.testing.assert_allclose(one["band_gap_eV"], [0.0, 0.0, 0.0, 3.0], atol=0)


def test_mixture_median_is_the_median() -> None:
    from scipy.stats import norm

    from fastgap.ensemble import mixture_median

    rng = np.random.default_rng(0)
    mean, std = rng.uniform(0.5, 4.0, 200), rng.uniform(0.05, 1.0, 200)
    pm = rng.uniform(0.0, 0.6, 200)
    y = mixture_median(mean, std, pm)
    cdf = pm + (1 - pm) * norm.cdf((y - mean) / std)  # P(gap <= y) under the mixture
    pos = y > 0
    np.testing.assert_allclose(cdf[pos], 0.5, atol=1e-9)
    assert (cdf[~pos] >= 0.5 - 1e-12).all() and (y[pm >= 0.5] == 0).all()
    assert (y <= np.maximum(mean, 0) + 1e-12).all()  # never above the mean
    # monotone: more metal probability, smaller gap; zero std: the clipped mean
    grid = mixture_median(np.full(6, 2.0), np.full(6, 0.5), np.linspace(0, 0.49, 6))
    assert (np.diff(grid) < 0).all() and grid[0] == 2.0
    np.testing.assert_array_equal(mixture_median(np.array([1.5]), np.array([0.0]),
                                                 np.array([0.3])), [1.5])


def test_mixed_good_and_bad_inputs(bundle, tmp_path: Path) -> None:
    good = _cifs(3)
    for f in good:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "broken.cif").write_text("data_x\n_cell_length_a 3\n")
    (tmp_path / "empty.cif").write_text("")
    (tmp_path / "notes.txt").write_text("not a structure")
    lines = [json.dumps({"id": "overlap", "lattice": np.eye(3).tolist(), "species": ["Na", "Cl"],
                         "frac_coords": [[0, 0, 0], [0.01, 0, 0]]}),
             json.dumps({"id": "uranium", "lattice": (np.eye(3) * 3).tolist(),
                         "species": ["U"], "frac_coords": [[0, 0, 0]]})]
    (tmp_path / "extra.jsonl").write_text("\n".join(lines) + "\n")
    inputs = [tmp_path / "broken.cif", *[tmp_path / f.name for f in good],
              tmp_path / "empty.cif", tmp_path / "notes.txt", tmp_path / "extra.jsonl"]
    out = tmp_path / "preds.csv"
    summary = predict_to_file(inputs, out, PredictConfig(model=bundle, **_cfg()))
    df = pd.read_csv(out)
    assert list(df["id"]) == [f.stem for f in good]
    rejects = pd.read_csv(tmp_path / "preds.rejects.csv")
    assert list(rejects.columns) == ["id", "source", "reason"]
    assert sorted(rejects["id"]) == ["broken", "empty", "notes", "overlap", "uranium"]
    reason = dict(zip(rejects["id"], rejects["reason"]))
    assert "Z <= 85" in reason["uranium"] and "empty" in reason["empty"]
    assert (summary.inputs, summary.predicted, summary.rejected) == (8, 3, 5)


def _cfg() -> dict:
    return {"workers": 0, "progress": False, "batch_size": 64, "chunk_size": 40}


def test_files_and_store_give_the_same_numbers(bundle, tmp_path: Path) -> None:
    from fastgap.featurize import FeaturizeConfig, featurize

    featurize([DATA / "mp100.jsonl"], tmp_path / "store",
              FeaturizeConfig(workers=0, progress=False, chunk_size=50))
    from_files = predict([DATA / "mp100.jsonl"], bundle, CFG)
    from_store = predict([tmp_path / "store"], bundle, CFG)
    assert len(from_files) == 100
    pd.testing.assert_frame_equal(from_files, from_store, check_exact=True)


def test_worker_pool_matches_in_process(bundle, tmp_path: Path) -> None:
    out = tmp_path / "preds.parquet"
    predict_to_file([DATA / "mp100.jsonl"], out, PredictConfig(model=bundle, **{**_cfg(),
                                                                            "workers": 1}))
    pooled = pd.read_parquet(out)
    local = predict([DATA / "mp100.jsonl"], bundle, CFG)
    pd.testing.assert_frame_equal(pooled, local, check_exact=True)


def test_parquet_and_csv_outputs_agree(bundle, tmp_path: Path) -> None:
    inputs = [DATA / "mp100.jsonl"]
    predict_to_file(inputs, tmp_path / "a.csv", PredictConfig(model=bundle, **_cfg()))
    predict_to_file(inputs, tmp_path / "a.parquet", PredictConfig(model=bundle, **_cfg()))
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_parquet(tmp_path / "a.parquet")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, atol=0)
    assert not (tmp_path / "a.parquet.partial").exists()


def test_pymatgen_and_ase_objects(bundle) -> None:
    from ase.io import read as ase_read
    from pymatgen.core import Structure

    path = EXAMPLES / "mp-149.cif"
    ref = predict(path, bundle, CFG)
    pmg = Structure.from_file(path)
    pmg.properties["id"] = "mp-149"
    atoms = ase_read(path)
    atoms.info["id"] = "mp-149"
    for obj in (pmg, atoms):
        got = predict(obj, bundle, CFG)
        assert list(got["id"]) == ["mp-149"]
        np.testing.assert_allclose(got["band_gap_regressor_eV"], ref["band_gap_regressor_eV"],
                                   rtol=0, atol=1e-5)


def test_rejects_are_reported_in_python(bundle) -> None:
    from pymatgen.core import Lattice, Structure

    bad = Structure(Lattice.cubic(3.0), ["U"], [[0, 0, 0]])
    with pytest.warns(UserWarning, match="1 input"):
        df = predict([EXAMPLES / "mp-30.cif", bad], bundle, CFG)
    assert list(df["id"]) == ["mp-30"]
    assert df.attrs["rejects"][0]["id"] == "object-1"


def test_duplicate_ids_rejected(bundle, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    shutil.copy(EXAMPLES / "mp-30.cif", tmp_path / "a" / "x.cif")
    shutil.copy(EXAMPLES / "mp-149.cif", tmp_path / "x.cif")
    with pytest.warns(UserWarning, match="duplicate id 'x'"):
        df = predict([tmp_path / "a" / "x.cif", tmp_path / "x.cif"], bundle, CFG)
    assert len(df) == 1


def test_bundled_default_model_loads_offline() -> None:
    if not (default_bundle_dir() / "card.json").is_file():
        pytest.skip("no default model bundle committed yet (scripts/train_default_models.sh)")
    bundle = load_bundle("default")
    assert len(bundle.band_gap) >= 5 and bundle.metal
    df = predict(EXAMPLES / "mp-149.cif", bundle, CFG)
    assert df["band_gap_std_eV"].notna().all()
    assert trained_periodicity(bundle)[0] == {"periodic"}  # crystals only, from the card


def test_bundled_fast_model_loads_offline() -> None:
    """`fastgap predict --fast` (with the default model) runs this bundle: one network in
    both roles, its card's metrics from the fixed test split."""
    if not (default_bundle_dir("fast") / "card.json").is_file():
        pytest.skip("no fast model bundle committed yet (scripts/train_fast_model.sh)")
    fast = load_bundle("fast")
    assert len(fast.members) == 1 and fast.band_gap[0] is fast.metal[0]
    assert fast.members[0].model.config.pooling == "attention"  # order-free: no TTA needed
    assert fast.card["metrics"]["test_split"]["n_test"] > 3000
    df = predict(EXAMPLES / "mp-149.cif", fast, CFG)
    assert list(df.columns) == ["id", "band_gap_eV", "p_metal", "band_gap_regressor_eV"]
    assert trained_periodicity(fast)[0] == {"periodic"}


def _water():
    from pymatgen.core import Molecule

    water = Molecule(["O", "H", "H"], [[0, 0, 0], [0.757, 0.586, 0], [-0.757, 0.586, 0]])
    water.properties["id"] = "water"
    return water


def test_molecule_rejected_by_a_crystal_model(bundle, bundle_dir: Path) -> None:
    card = json.loads((bundle_dir / "card.json").read_text())
    for member in bundle.members:  # recorded in training, copied into the card by pack_bundle
        counts = member.meta["training_periodicity"]
        assert counts["periodic"] > 0 and counts["partial"] == counts["molecule"] == 0
        assert card["provenance"][member.path.name]["training_periodicity"] == counts
    with pytest.warns(UserWarning, match="1 input"):
        df = predict([EXAMPLES / "mp-149.cif", _water()], bundle, CFG)
    assert list(df["id"]) == ["mp-149"]
    reason = df.attrs["rejects"][0]["reason"]
    assert df.attrs["rejects"][0]["id"] == "water"
    assert reason.startswith("pbc: molecule input (pbc (False, False, False)), but the "
                             "model was trained on periodic structures only")
    anyway = predict([EXAMPLES / "mp-149.cif", _water()], bundle,
                     PredictConfig(**{**CFG.__dict__, "any_periodicity": True}))
    assert list(anyway["id"]) == ["mp-149", "water"]
    np.testing.assert_allclose(anyway["band_gap_eV"][:1], df["band_gap_eV"], atol=1e-9)


def test_unknown_training_periodicity_means_no_check(bundle_dir: Path, tmp_path: Path) -> None:
    """A checkpoint written before the counts were recorded, in a bundle without them."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    old = tmp_path / "old"
    shutil.copytree(bundle_dir, old)
    card = json.loads((old / "card.json").read_text())
    for info in card["provenance"].values():
        del info["training_periodicity"]
    (old / "card.json").write_text(json.dumps(card))
    for path in old.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata()
        meta = json.loads(header["fastgap"])
        del meta["training_periodicity"]
        save_file(load_file(str(path)), str(path), metadata={"fastgap": json.dumps(meta)})
    old_bundle = load_bundle(old)
    assert trained_periodicity(old_bundle) == (None, [])
    df = predict(_water(), old_bundle, CFG)
    assert list(df["id"]) == ["water"]


def test_missing_default_bundle_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    from fastgap import ensemble

    monkeypatch.setattr(ensemble, "default_bundle_dir", lambda name="default": tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="default model bundle is not installed"):
        load_bundle("default")


def test_corrupted_model_file_refused(bundle_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    data = (bundle_dir / "gap_0.safetensors").read_bytes()
    bad.write_bytes(data[:8] + b"\x00garbage" + data[16:200])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_bundle(bad)


def test_bundle_format_mismatch_names_both_versions(bundle_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(bundle_dir, tmp_path / "b")
    card = json.loads((copy / "card.json").read_text())
    card["bundle_format"] = BUNDLE_FORMAT + 1
    (copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=rf"bundle format {BUNDLE_FORMAT + 1}.*reads bundle "
                                         rf"format {BUNDLE_FORMAT}"):
        load_bundle(copy)


def test_checkpoint_format_mismatch_refused(bundle_dir: Path, tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = bundle_dir / "gap_0.safetensors"
    with safe_open(str(src), framework="pt") as fh:
        meta = json.loads(fh.metadata()["fastgap"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    meta["format_version"] = 99
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"fastgap": json.dumps(meta)})
    with pytest.raises(ValueError, match="format version 99"):
        load_bundle(tmp_path / "old.safetensors")


def test_card_member_with_wrong_target_refused(bundle_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(bundle_dir, tmp_path / "b")
    card = json.loads((copy / "card.json").read_text())
    card["members"]["metal"] = ["gap_0.safetensors"]
    (copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="do not predict 'is_metal'"):
        load_bundle(copy)


def test_bad_arguments(bundle, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers: expected an int >= 0"):
        PredictConfig(workers=-1)
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1"):
        PredictConfig(batch_size=0)
    with pytest.raises(TypeError, match="model: expected 'default', 'fast', 'qm9' or a path"):
        load_bundle(3)
    with pytest.raises(FileNotFoundError, match="model: expected 'default', 'fast', 'qm9', a bundle"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(ValueError, match="out: expected a .csv or .parquet path"):
        predict_to_file([EXAMPLES / "mp-30.cif"], tmp_path / "p.txt",
                        PredictConfig(model=bundle, **_cfg()))


def test_store_with_other_k_refused(bundle, tmp_path: Path) -> None:
    from fastgap.featurize import FeaturizeConfig, featurize

    featurize([EXAMPLES / "mp-30.cif"], tmp_path / "s",
              FeaturizeConfig(featurizer=FeaturizerConfig(k=12), workers=0, progress=False))
    with pytest.raises(ValueError, match="k=12 neighbours, the model was trained with k=19"):
        predict([tmp_path / "s"], bundle, CFG)


def test_package_level_predict_stays_callable(bundle) -> None:
    import fastgap

    first = fastgap.predict(EXAMPLES / "mp-30.cif", bundle, CFG)
    import fastgap.screening
    second = fastgap.predict(EXAMPLES / "mp-30.cif", bundle, CFG)
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_a_model_of_another_property_writes_only_its_columns(tmp_path: Path) -> None:
    """A run trained on a property other than the band gap: id and that property, no
    empty band-gap columns."""
    from fastgap.features import featurize_structures
    from fastgap.model import ModelConfig, predict_batch
    from fastgap.readers import read_structures
    from fastgap.train import TrainConfig, train

    batch, _ = featurize_structures(read_structures([DATA / "mp100.jsonl"]), FeaturizerConfig())
    batch.properties["twice_gap"] = 2.0 * np.asarray(batch.properties["band_gap_eV"])
    run = train(TrainConfig(out=str(tmp_path / "run"), targets=["twice_gap"], epochs=1,
                            model=ModelConfig(embed_dim=8, atom_hidden=8, struct_hidden=8,
                                              head_sizes=(8,)),
                            progress=False, device="cpu", max_z=85, batch_size=32), batch)
    files = [EXAMPLES / "mp-149.cif", EXAMPLES / "mp-30.cif"]
    df = predict(files, run, CFG)
    assert list(df.columns) == ["id", "twice_gap"]
    assert list(df["id"]) == ["mp-149", "mp-30"]
    model = load_bundle(run).others[0].model
    want = predict_batch(model, featurize_structures(read_structures(files),
                                                     FeaturizerConfig())[0])[:, 0]
    np.testing.assert_allclose(df["twice_gap"], want, rtol=1e-5, atol=1e-6)
    out = tmp_path / "p.csv"
    predict_to_file(files, out, CFG.__class__(**{**CFG.__dict__, "model": str(run)}))
    assert out.read_text().splitlines()[0] == "id,twice_gap"


def test_one_network_serves_both_roles(tmp_path: Path) -> None:
    """A checkpoint predicting band gap and is_metal, packed in both roles, is one file and
    one member: it runs once, and its two outputs are the screening columns."""
    from fastgap.bundle_card import pack_bundle
    from fastgap.checkpoint import load_model
    from fastgap.data import StructureDataset
    from fastgap.features import featurize_structures
    from fastgap.model import ModelConfig, predict_dataset
    from fastgap.readers import read_structures
    from fastgap.train import TrainConfig, train

    batch, _ = featurize_structures(read_structures([DATA / "mp100.jsonl"]), FeaturizerConfig())
    tiny = ModelConfig(embed_dim=8, atom_hidden=8, struct_hidden=8, head_sizes=(8,))
    run = train(TrainConfig(out=str(tmp_path / "joint"), targets=["band_gap_eV", "is_metal"],
                            epochs=1, model=tiny, progress=False, compile="off", device="cpu",
                            max_z=85, batch_size=32), batch)
    out = pack_bundle(tmp_path / "fast", [run], [run], {"data": "mp100"})
    card = json.loads((out / "card.json").read_text())
    assert card["members"] == {"band_gap": ["gap_0.safetensors"], "metal": ["gap_0.safetensors"]}
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["gap_0.safetensors"]
    fast = load_bundle(out)
    assert len(fast.members) == 1 and fast.band_gap[0] is fast.metal[0]
    calls = []
    hook = fast.members[0].model.register_forward_hook(lambda *a: calls.append(1))
    df = predict(_cifs(4), fast, CFG)
    hook.remove()
    assert len(calls) == 1  # one forward pass for the 4 structures and both columns
    assert list(df.columns) == ["id", "band_gap_eV", "p_metal", "band_gap_regressor_eV"]
    feats, _ = featurize_structures(read_structures(_cifs(4)), FeaturizerConfig())
    model, _ = load_model(out / "gap_0.safetensors")
    raw = predict_dataset(model, StructureDataset(feats), np.arange(4), tta=True)
    np.testing.assert_allclose(df["band_gap_regressor_eV"], raw[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(df["p_metal"], raw[:, 1], rtol=1e-5, atol=1e-6)
    expect = np.where(raw[:, 1] >= 0.5, 0.0, np.maximum(raw[:, 0], 0.0))
    np.testing.assert_allclose(df["band_gap_eV"], expect, rtol=1e-5, atol=1e-6)


def test_csv_rows_are_pandas_to_csv_bytes(tmp_path: Path) -> None:
    """The rows writer formats CSV itself (faster); its bytes are pandas' ``to_csv`` ones."""
    from fastgap.prediction_files import RowWriter

    rng = np.random.default_rng(0)
    special = [0.0, -0.0, 1.0, 1e-5, 1.5e-7, 0.0001, 2.0 / 3, 1e16, 1e22, 1e-300, 5e-324,
               123456789.123, np.nan, np.inf, -np.inf]
    n = 2000 + len(special)
    values = np.concatenate([rng.random(2000) * 10.0 ** rng.integers(-8, 8, 2000), special])
    ids = [f"mp-{i}" for i in range(n)]
    ids[:4] = ["a,b", 'q"x', " lead", "é"]
    frame = pd.DataFrame({"id": ids, "x": values, "y": values[::-1].copy()})
    out = tmp_path / "rows.csv"
    with RowWriter(out, ["id", "x", "y"]) as writer:
        writer.write(frame.iloc[:1000])
        writer.write(frame.iloc[1000:])
    want = "id,x,y\n" + frame.to_csv(header=False, index=False, lineterminator="\n")
    assert out.read_text(encoding="utf-8") == want  # moved into place on success
