"""Training: targets, filters, splits, loss masking, overfit, resume, CLI, end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from fastgap.model import FastGapModel, ModelConfig
from fastgap.synthetic import synthetic_featurized
from fastgap.train import TrainConfig, train
from fastgap.training.targets import make_split, masked_loss, parse_where, select_structures

TINY = ModelConfig(embed_dim=8, atom_hidden=16, struct_hidden=16, head_sizes=(16,))


def _data(n: int = 60, seed: int = 0):
    return synthetic_featurized(n, np.random.default_rng(seed), max_atoms=6)


def _config(tmp_path, **kw) -> TrainConfig:
    base = {"out": str(tmp_path / "run"), "epochs": 2, "batch_size": 8, "progress": False,
            "model": TINY, "threads": 1}
    return TrainConfig(**{**base, **kw})


def test_parse_where() -> None:
    assert parse_where("band_gap_eV > 0 and x <= -1.5e1") == [
        ("band_gap_eV", ">", 0.0), ("x", "<=", -15.0)]
    assert parse_where("  ") == []
    with pytest.raises(ValueError, match="expected 'name op number"):
        parse_where("band_gap_eV > 0; import os")
    with pytest.raises(TypeError, match="where: expected a string"):
        parse_where(3)


def test_select_structures_filters_and_max_z() -> None:
    cols = {"g": np.array([0.0, 1.0, np.nan, 2.0])}
    zmax = np.array([10, 90, 3, 20])
    assert select_structures(cols, "g > 0", zmax, 85).tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match="unknown property 'h'"):
        select_structures(cols, "h > 0", zmax, None)
    with pytest.raises(ValueError, match="max_z: expected an integer in 1..118"):
        select_structures(cols, "", zmax, 200)


def test_split_random_and_from_file(tmp_path) -> None:
    ids = np.array([f"s{i}" for i in range(10)], dtype=object)
    s = make_split(ids, np.arange(10), fractions=(0.8, 0.1, 0.1), seed=0)
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(10))
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["s1", "s2", "zz"], "val": ["s3"], "test": ["s4"]}))
    s = make_split(ids, np.array([1, 3, 4]), fractions=(1, 0, 0), seed=0, split_file=path)
    assert [s[k].tolist() for k in ("train", "val", "test")] == [[1], [3], [4]]
    with pytest.raises(ValueError, match="three non-negative fractions summing to 1"):
        make_split(ids, np.arange(10), fractions=(0.5, 0.1, 0.1), seed=0)
    path.write_text(json.dumps({"train": []}))
    with pytest.raises(ValueError, match=r"missing \['test', 'val'\]"):
        make_split(ids, np.arange(10), fractions=(1, 0, 0), seed=0, split_file=path)


def test_masked_loss_ignores_nan_targets() -> None:
    model = FastGapModel(ModelConfig(n_outputs=2))
    out = torch.tensor([[0.0, 0.0], [1.0, 5.0]])
    targets = torch.tensor([[1.0, float("nan")], [1.0, 1.0]])
    loss = masked_loss(out, targets, model)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, torch.tensor((0.5 + 4.0) / 2), rtol=0, atol=1e-6)
    model.target_is_class[1] = True  # BCE column: only the valid entry counts
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(5.0), torch.tensor(1.0))
    torch.testing.assert_close(masked_loss(out, targets, model), (0.5 + bce) / 2, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"targets": []}, "targets: expected at least one"),
     ({"epochs": 0}, "epochs: expected an integer >= 1"),
     ({"device": "tpu"}, "device: expected 'auto', 'cpu' or 'cuda'"),
     ({"compile": "maybe"}, "compile: expected 'auto', 'on' or 'off'"),
     ({"amp": "on", "device": "cpu"}, "amp: 'on' needs a CUDA device"),
     ({"schedule": "step"}, "schedule: expected 'cosine' or 'constant'"),
     ({"ema_decay": 1.0}, r"ema_decay: expected a number in \[0, 1\)"),
     ({"where": "band_gap_eV > 100"}, "train and val must be non-empty"),
     ({"store": ""}, "store: expected the path of a feature store")],
)
def test_config_validation(tmp_path, kwargs: dict, match: str) -> None:
    data = None if "store" in kwargs else _data()
    with pytest.raises(ValueError, match=match):
        train(_config(tmp_path, **kwargs), data)


def test_model_max_z_must_cover_the_data(tmp_path) -> None:
    small = ModelConfig(**{**TINY.to_dict(), "max_z": 10})
    with pytest.raises(ValueError, match="the model embeds up to 10"):
        train(_config(tmp_path, model=small), _data())


def test_toml_config(tmp_path) -> None:
    path = tmp_path / "cfg.toml"
    path.write_text('epochs = 3\nwhere = "band_gap_eV > 0"\n[model]\natom_hidden = 12\n')
    cfg = TrainConfig.from_toml(path, epochs=5)
    assert (cfg.epochs, cfg.where, cfg.model.atom_hidden) == (5, "band_gap_eV > 0", 12)
    path.write_text("epochz = 3\n")
    with pytest.raises(ValueError, match=r"unknown keys \['epochz'\]"):
        TrainConfig.from_toml(path)


def test_overfits_a_tiny_set(tmp_path) -> None:
    data = _data(16)
    cfg = _config(tmp_path, epochs=150, batch_size=16, lr=1e-2, split=(0.5, 0.5, 0.0),
                  patience=999, augment=False, model=ModelConfig(**{**TINY.to_dict(), "head_sizes": (32,)}))
    out = train(cfg, data)
    hist = json.loads((out / "history.json").read_text())
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] / 10


def test_resume_equals_straight_through(tmp_path, learning_history) -> None:
    data = _data()
    straight = train(_config(tmp_path, out=str(tmp_path / "a"), epochs=4), data)
    first = _config(tmp_path, out=str(tmp_path / "b"), epochs=4, stop_after_epochs=2)
    train(first, data)
    resumed = train(_config(tmp_path, out=str(tmp_path / "b"), epochs=4, resume=True), data)
    a, b = learning_history(straight), learning_history(resumed)
    assert len(a) == len(b) == 4
    assert a == b
    assert (straight / "metrics.json").read_text() == (resumed / "metrics.json").read_text()


def test_ema_weights_are_validated_and_kept(tmp_path, learning_history) -> None:
    """best.safetensors holds the moving average: its validation loss is the recorded one."""
    from safetensors.torch import load_file

    from fastgap.checkpoint import load_model
    from fastgap.training.loop import resolve_runtime
    from fastgap.training.run import _val_loss, prepare_data

    data = _data()
    cfg = _config(tmp_path, epochs=3, patience=99, ema_decay=0.9)
    out = train(cfg, data)
    hist = json.loads((out / "history.json").read_text())
    best, _ = load_model(out / "best.safetensors")
    raw = load_file(str(out / "last.safetensors"))
    name = "atom_lstm.weight_hh_l0"
    assert not torch.equal(best.state_dict()[name], raw[name])  # averaged, not the raw weights
    dataset, split = prepare_data(cfg, data)
    runtime = resolve_runtime("cpu", "off")
    val = _val_loss(best, dataset, split["val"], cfg, runtime)
    assert val == pytest.approx(min(h["val_loss"] for h in hist), rel=1e-6)
    # without the average, the same seed trains the same raw weights but validates them
    plain = train(_config(tmp_path, out=str(tmp_path / "plain"), epochs=3, patience=99), data)
    torch.testing.assert_close(load_file(str(plain / "last.safetensors"))[name], raw[name])
    assert learning_history(plain) != learning_history(out)


def test_resume_with_ema_equals_straight_through(tmp_path, learning_history) -> None:
    data = _data()
    kw = {"epochs": 4, "ema_decay": 0.8}
    straight = train(_config(tmp_path, out=str(tmp_path / "a"), **kw), data)
    train(_config(tmp_path, out=str(tmp_path / "b"), stop_after_epochs=2, **kw), data)
    resumed = train(_config(tmp_path, out=str(tmp_path / "b"), resume=True, **kw), data)
    assert learning_history(straight) == learning_history(resumed)
    assert (straight / "metrics.json").read_text() == (resumed / "metrics.json").read_text()
    with pytest.raises(ValueError, match="resume: the saved run was trained with ema_decay"):
        train(_config(tmp_path, out=str(tmp_path / "b"), epochs=5, resume=True), data)


def test_checkpoint_records_the_periodicity_of_the_training_split(tmp_path) -> None:
    from fastgap.checkpoint import read_metadata

    data = synthetic_featurized(60, np.random.default_rng(1), max_atoms=6, molecule_fraction=0.4)
    out = train(_config(tmp_path, epochs=1), data)
    train_ids = json.loads((out / "split.json").read_text())["train"]
    train_rows = np.isin(data.ids.astype(str), train_ids)
    n_mol = int((~data.pbc[train_rows].any(axis=1)).sum())
    assert 0 < n_mol < train_rows.sum()
    for name in ("best.safetensors", "last.safetensors"):
        assert read_metadata(out / name)["training_periodicity"] == {
            "periodic": int(train_rows.sum()) - n_mol, "partial": 0, "molecule": n_mol}


def test_run_directory_and_multi_target(tmp_path) -> None:
    out = train(_config(tmp_path, targets=["band_gap_eV", "is_metal"]), _data())
    for name in ("config.json", "split.json", "best.safetensors", "last_state.pt",
                 "metrics.json", "curves.png", "parity_band_gap_eV.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"tta", "no_tta"}
    assert set(metrics["test"]["tta"]["is_metal"]) == {"n", "accuracy", "roc_auc"}
    assert set(metrics["val"]["no_tta"]["band_gap_eV"]) == {"n", "mae", "rmse", "r2"}
    split = json.loads((out / "split.json").read_text())
    assert sum(len(v) for v in split.values()) == 60


def test_target_where_masks_one_target_only(tmp_path) -> None:
    """A per-target filter removes that target's values outside its condition (they are
    missing, not zero) and keeps the structures for the other targets."""
    from fastgap.training.run import prepare_data

    data = _data()
    gap = np.asarray(data.properties["band_gap_eV"])
    assert 0 < (gap == 0).sum() < len(gap)
    cfg = _config(tmp_path, targets=["band_gap_eV", "is_metal"],
                  target_where={"band_gap_eV": "band_gap_eV > 0"})
    dataset, split = prepare_data(cfg, data)
    col = dataset.targets[:, 0].numpy()
    np.testing.assert_array_equal(np.isnan(col), gap == 0)
    np.testing.assert_allclose(col[gap > 0], gap[gap > 0], rtol=1e-6)
    assert not torch.isnan(dataset.targets[:, 1]).any()
    plain, plain_split = prepare_data(replace(cfg, target_where={}), data)
    assert {k: list(v) for k, v in split.items()} == {k: list(v) for k, v in plain_split.items()}
    out = train(cfg, data)
    metrics = json.loads((out / "metrics.json").read_text())["test"]["no_tta"]
    test = np.asarray(split["test"])
    assert metrics["band_gap_eV"]["n"] == int((gap[test] > 0).sum())
    assert metrics["is_metal"]["n"] == len(test)
    saved = json.loads((out / "config.json").read_text())["target_where"]
    assert saved == {"band_gap_eV": "band_gap_eV > 0"}


def test_round_two_rows_are_built_only_for_a_model_that_reads_them(tmp_path) -> None:
    """With rounds = 1 the dataset skips the round-2 rows, and a model trained on it gives
    the predictions of the same weights on the dataset with them."""
    from fastgap.checkpoint import load_model
    from fastgap.data import StructureDataset
    from fastgap.model import predict_dataset
    from fastgap.training.run import prepare_data

    data = _data()
    assert data.nbr_indices is not None
    one, split = prepare_data(_config(tmp_path), data)
    two, _ = prepare_data(_config(tmp_path, model=replace(TINY, rounds=2)), data)
    assert one.round_entries is None and two.round_entries is not None
    out = train(_config(tmp_path), data)
    model = load_model(out / "best.safetensors")[0]
    idx = np.asarray(split["test"])
    full = StructureDataset(data)
    assert full.round_entries is not None
    np.testing.assert_array_equal(predict_dataset(model, one, idx, tta=True),
                                  predict_dataset(model, full, idx, tta=True))


@pytest.mark.parametrize("value, error, match", [
    ({"formation_energy": "x > 0"}, ValueError, r"target_where: \['formation_energy'\] are not"),
    ({"band_gap_eV": 0}, TypeError, "target_where: expected a table"),
    ("band_gap_eV > 0", TypeError, "target_where: expected a table"),
])
def test_target_where_is_validated(tmp_path, value, error, match) -> None:
    with pytest.raises(error, match=match):
        _config(tmp_path, target_where=value)


def test_end_to_end_store_cli_reload(tmp_path) -> None:
    from fastgap.checkpoint import load_model
    from fastgap.cli import main
    from fastgap.features import FeaturizerConfig
    from fastgap.model import predict_batch
    from fastgap.store import Store

    data = _data()
    store = Store.create(tmp_path / "s.zarr", FeaturizerConfig(k=19))
    store.append(data)
    out = tmp_path / "cli"
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("threads = 1\nbatch_size = 8\n[model]\nembed_dim = 8\natom_hidden = 8\n"
                   "struct_hidden = 8\nhead_sizes = [8]\n")
    rc = main(["train", "--store", str(tmp_path / "s.zarr"), "--target", "band_gap_eV",
               "--out", str(out), "--epochs", "2", "--config", str(cfg), "--where",
               "band_gap_eV > 0", "--max-z", "85", "--no-progress"])
    assert rc == 0
    model, meta = load_model(out / "best.safetensors", featurizer={"k": 19})
    assert meta["featurizer"]["k"] == 19 and meta["train_config"]["where"] == "band_gap_eV > 0"
    loaded = Store.open(tmp_path / "s.zarr").load()
    first = predict_batch(model, loaded, tta=True)
    again, _ = load_model(out / "best.safetensors")
    np.testing.assert_array_equal(predict_batch(again, loaded, tta=True), first)


def _one_batch(n: int = 12):
    from fastgap.data import ALL_VARIANTS, StructureDataset, collate

    dataset = StructureDataset(_data(n), targets=["band_gap_eV"])
    return collate([dataset[(i, ALL_VARIANTS)] for i in range(n)])


def test_jitter_moves_only_real_neighbour_distances() -> None:
    from fastgap.training.loop import MIN_JITTER_FRACTION, jitter_distances

    batch = _one_batch()
    d = batch.atom_distances.clone()
    d[d == 0] = float("nan")  # padding holding garbage must stay as it is
    d[:, 0] = 0.0
    batch = replace(batch, atom_distances=d)
    out = jitter_distances(batch, 0.05, torch.Generator().manual_seed(0)).atom_distances
    steps = torch.arange(d.shape[1])
    real = (steps > 0) & (steps < batch.atom_lengths[:, None])
    assert torch.equal(out[:, 0], d[:, 0])
    assert torch.equal(out[~real].isnan(), d[~real].isnan())
    torch.testing.assert_close(out[~real & ~d.isnan()], d[~real & ~d.isnan()], rtol=0, atol=0)
    moved = (out - d)[real]
    assert moved.abs().min() > 0 and 0.04 < float(moved.std()) < 0.06
    assert bool((out[real] >= MIN_JITTER_FRACTION * d[real]).all())
    again = jitter_distances(batch, 0.05, torch.Generator().manual_seed(0)).atom_distances
    assert torch.equal(again[real], out[real])
    assert batch.atom_distances is d  # the input batch is not modified


def test_distance_noise_trains_differently_and_resumes_exactly(tmp_path,
                                                              learning_history) -> None:
    from safetensors.torch import load_file

    data = _data()
    kw = {"epochs": 4, "distance_noise": 0.1}
    noisy = train(_config(tmp_path, out=str(tmp_path / "a"), **kw), data)
    plain = train(_config(tmp_path, out=str(tmp_path / "p"), epochs=4), data)
    name = "atom_lstm.weight_hh_l0"
    assert not torch.equal(load_file(str(noisy / "last.safetensors"))[name],
                           load_file(str(plain / "last.safetensors"))[name])
    train(_config(tmp_path, out=str(tmp_path / "b"), stop_after_epochs=2, **kw), data)
    resumed = train(_config(tmp_path, out=str(tmp_path / "b"), resume=True, **kw), data)
    assert learning_history(noisy) == learning_history(resumed)
    assert (noisy / "metrics.json").read_text() == (resumed / "metrics.json").read_text()


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf")])
def test_distance_noise_must_be_finite_and_non_negative(tmp_path, value) -> None:
    with pytest.raises(ValueError, match="distance_noise: expected a finite number >= 0"):
        _config(tmp_path, distance_noise=value)
