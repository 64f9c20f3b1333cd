"""Shared-collate inference: TTA skipped for order-free pooling, bf16, member subsets, options."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fastgap.bundle_card import pack_bundle
from fastgap.checkpoint import save_model
from fastgap.data import BucketBatchSampler, StructureDataset, make_loader
from fastgap.ensemble import Bundle, load_bundle, select_members
from fastgap.inference import (
    identity_view,
    native_bf16,
    order_free,
    predict_members,
    quantized,
    resolve_precision,
)
from fastgap.model import FastGapModel, ModelConfig, predict_dataset
from fastgap.screening import PredictConfig, predict
from fastgap.synthetic import synthetic_featurized

DATA = Path(__file__).parent / "data" / "predict" / "mp100.jsonl"
SMALL = {"embed_dim": 8, "atom_hidden": 8, "struct_hidden": 8, "head_sizes": (8,)}


def _model(seed: int, pooling: str, cls: bool = False) -> FastGapModel:
    torch.manual_seed(seed)
    model = FastGapModel(ModelConfig(pooling=pooling, distance_encoding="rbf", **SMALL))
    model.target_is_class.fill_(cls)
    model.target_std.fill_(1.5)  # a non-trivial normaliser
    return model.eval()


def make_bundle(root: Path, n_gap: int = 3, card: dict | None = None, n_cls: int = 1) -> Path:
    """``n_gap`` attention-pooling regressors + ``n_cls`` LSTM-pooling classifiers, random
    weights."""
    paths = []
    for i in range(n_gap + n_cls):
        cls = i >= n_gap
        target = "is_metal" if cls else "band_gap_eV"
        paths.append(save_model(_model(i, "lstm" if cls else "attention", cls),
                                root / f"m{i}.safetensors", targets=[target],
                                featurizer={"k": 19}, train_config={"max_z": 85}))
    return pack_bundle(root / "bundle", paths[:n_gap], paths[n_gap:], card or {})


@pytest.fixture(scope="module")
def dataset() -> StructureDataset:
    """Random structures with several distinct axis-swap orders each."""
    ds = StructureDataset(synthetic_featurized(40, np.random.default_rng(3), max_atoms=9))
    assert ds.n_variants.max() > 1  # otherwise TTA would be trivially a no-op
    return ds


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("inference"))


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_order_free_members_skip_tta_with_the_same_numbers(dataset, pooling: str) -> None:
    model = _model(0, pooling)
    assert order_free(model)
    idx = np.arange(len(dataset))
    averaged = predict_dataset(model, dataset, idx, tta=True, batch_size=16)
    identity = predict_dataset(model, dataset, idx, tta=False, batch_size=16)
    (fast,) = predict_members([model], dataset, tta=True, batch_size=16)
    np.testing.assert_array_equal(fast, identity)
    np.testing.assert_allclose(fast, averaged, rtol=0, atol=1e-5)


def test_order_dependent_member_keeps_tta(dataset) -> None:
    lstm, attn = _model(1, "lstm"), _model(2, "attention")
    assert not order_free(lstm)
    idx = np.arange(len(dataset))
    averaged = predict_dataset(lstm, dataset, idx, tta=True, batch_size=16)
    identity = predict_dataset(lstm, dataset, idx, tta=False, batch_size=16)
    assert np.abs(averaged - identity).max() > 1e-4  # TTA matters for LSTM pooling
    out_lstm, out_attn = predict_members([lstm, attn], dataset, tta=True, batch_size=16)
    np.testing.assert_allclose(out_lstm, averaged, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(
        out_attn, predict_dataset(attn, dataset, idx, tta=False, batch_size=16))
    (no_tta,) = predict_members([lstm], dataset, tta=False, batch_size=16)
    np.testing.assert_allclose(no_tta, identity, rtol=0, atol=1e-6)


def test_predictions_follow_indices_and_do_not_depend_on_batch_size(dataset) -> None:
    model = _model(4, "attention")
    idx = np.array([7, 3, 30, 0])
    (part,) = predict_members([model], dataset, idx, batch_size=3)
    (full,) = predict_members([model], dataset, batch_size=40)
    np.testing.assert_allclose(part, full[idx], rtol=0, atol=1e-6)


def test_identity_view_keeps_the_first_order_of_each_structure(dataset) -> None:
    sampler = BucketBatchSampler(dataset, np.arange(len(dataset)), 40, shuffle=False, tta=True)
    batch = next(iter(make_loader(dataset, sampler)))
    view = identity_view(batch)
    assert len(batch.seq_struct) > len(view.seq_struct)
    np.testing.assert_array_equal(view.seq_struct.numpy(), np.arange(batch.n_structures))
    ident = next(iter(make_loader(dataset, BucketBatchSampler(
        dataset, np.arange(len(dataset)), 40, shuffle=False, tta=False))))
    np.testing.assert_array_equal(view.seq_atoms.numpy()[:, : ident.seq_atoms.shape[1]],
                                  ident.seq_atoms.numpy())
    assert identity_view(ident) is ident


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_order_free_members_need_no_axis_swap_orders(pooling: str) -> None:
    featurized = synthetic_featurized(40, np.random.default_rng(3), max_atoms=9)
    every, stored = StructureDataset(featurized), StructureDataset(featurized, orders=False)
    assert every.n_variants.max() > 1 and stored.n_variants.max() == 1
    model = _model(7, pooling)
    (a,) = predict_members([model], every, tta=True)
    (b,) = predict_members([model], stored, tta=True)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    # an order-dependent model reads other numbers from the stored order: the orders matter
    lstm = _model(7, "lstm")
    (c,) = predict_members([lstm], every, tta=False)
    (d,) = predict_members([lstm], stored, tta=False)
    assert np.abs(c - d).max() > 1e-4


def test_bf16_is_close_to_fp32_but_not_identical(dataset) -> None:
    model = _model(5, "attention")
    (fp32,) = predict_members([model], dataset)
    (bf16,) = predict_members([model], dataset, precision="bf16")
    assert bf16.dtype == np.float64
    assert not np.array_equal(fp32, bf16)
    np.testing.assert_allclose(bf16, fp32, rtol=0, atol=0.05)


@pytest.mark.parametrize("pooling", ["attention", "lstm"])
def test_int8_is_close_to_fp32_and_leaves_the_model_float(pooling: str) -> None:
    # molecules give rows shorter than 20 entries: the quantized LSTMs read packed sequences
    ds = StructureDataset(synthetic_featurized(40, np.random.default_rng(4), max_atoms=9,
                                               molecule_fraction=0.5))
    assert bool((ds.lengths < 20).any())
    model = _model(6, pooling)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (fp32,) = predict_members([model], ds)
    (int8,) = predict_members([model], ds, precision="int8")
    assert int8.dtype == np.float64 and np.isfinite(int8).all()
    assert not np.array_equal(fp32, int8)
    np.testing.assert_allclose(int8, fp32, rtol=0, atol=0.05)
    # the float model is untouched; the int8 copy is made once and reused
    assert isinstance(model.atom_lstm, torch.nn.LSTM)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert quantized(model) is quantized(model)
    assert not isinstance(quantized(model).atom_lstm, torch.nn.LSTM)
    (again,) = predict_members([model], ds)
    np.testing.assert_array_equal(again, fp32)


def test_auto_precision_follows_the_cpu() -> None:
    assert resolve_precision("auto") == ("bf16" if native_bf16() else "fp32")
    for concrete in ("fp32", "bf16", "int8"):
        assert resolve_precision(concrete) == concrete
    assert PredictConfig(precision="auto").precision in ("bf16", "fp32")
    with pytest.raises(ValueError, match="precision: expected one of"):
        resolve_precision("fp16")


def test_predict_members_bad_arguments(dataset) -> None:
    model = _model(0, "attention")
    with pytest.raises(ValueError, match="precision: expected one of"):
        predict_members([model], dataset, precision="fp16")
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1"):
        predict_members([model], dataset, batch_size=0)


def test_members_subset_is_the_fast_mode(bundle_dir: Path) -> None:
    cfg = PredictConfig(workers=0, progress=False, members=1)
    full = predict(DATA, bundle_dir, PredictConfig(workers=0, progress=False))
    one = predict(DATA, bundle_dir, cfg)
    assert "band_gap_std_eV" in full.columns and "band_gap_std_eV" not in one.columns
    bundle = load_bundle(bundle_dir)
    only = predict(DATA, select_members(bundle, 1), PredictConfig(workers=0, progress=False))
    pd.testing.assert_frame_equal(one, only)
    np.testing.assert_array_equal(one["p_metal"], full["p_metal"])
    assert not np.allclose(one["band_gap_regressor_eV"], full["band_gap_regressor_eV"])


def test_members_limits_the_classifiers_too(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path, n_gap=2, n_cls=3))
    assert [len(select_members(bundle, n).metal) for n in (0, 1, 2)] == [3, 1, 2]
    one = predict(DATA, select_members(bundle, 1), PredictConfig(workers=0, progress=False))
    first = predict(DATA, Bundle(source="first", band_gap=bundle.band_gap[:1],
                                 metal=bundle.metal[:1], card={}, k=bundle.k),
                    PredictConfig(workers=0, progress=False))
    pd.testing.assert_frame_equal(one, first)


def test_select_members_errors(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert select_members(bundle, 0) is bundle and select_members(bundle, 3) is bundle
    assert len(select_members(bundle, 2).band_gap) == 2
    assert select_members(bundle, 3).card.get("calibration") == bundle.card.get("calibration")
    with pytest.raises(ValueError, match="members: the bundle .* has 3 band-gap regressors"):
        select_members(bundle, 4)
    with pytest.raises(ValueError, match="members: expected an int >= 0"):
        select_members(bundle, -1)


def test_predict_config_new_options_validated() -> None:
    with pytest.raises(ValueError, match="precision: expected one of"):
        PredictConfig(precision="half")
    with pytest.raises(ValueError, match="members: expected an int >= 0"):
        PredictConfig(members=-2)
    with pytest.raises(ValueError, match="start_method: expected one of"):
        PredictConfig(start_method="thread")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_start_methods_give_the_in_process_numbers(bundle_dir: Path, method: str) -> None:
    inline = predict(DATA, bundle_dir, PredictConfig(workers=0, progress=False))
    pooled = predict(DATA, bundle_dir, PredictConfig(workers=2, chunk_size=30, progress=False,
                                                     start_method=method))
    pd.testing.assert_frame_equal(pooled, inline, check_exact=False, rtol=0, atol=1e-6)


def test_bf16_end_to_end_keeps_ids_and_is_close(bundle_dir: Path) -> None:
    fp32 = predict(DATA, bundle_dir, PredictConfig(workers=0, progress=False))
    bf16 = predict(DATA, bundle_dir, PredictConfig(workers=0, progress=False, precision="bf16"))
    assert list(bf16["id"]) == list(fp32["id"])
    np.testing.assert_allclose(bf16["band_gap_regressor_eV"], fp32["band_gap_regressor_eV"],
                               rtol=0, atol=0.1)


def test_cli_flags_map_onto_the_config(bundle_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from fastgap.cli import predict as cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "p.csv"
    args = parser.parse_args([str(DATA), "--out", str(out), "--model", str(bundle_dir),
                              "--workers", "0", "--members", "2", "--precision", "bf16",
                              "--raw-std", "--no-progress"])
    assert cli.run(args) == 0
    frame = pd.read_csv(out)
    assert len(frame) > 0 and "band_gap_std_eV" in frame.columns
    with pytest.raises(SystemExit):
        parser.parse_args([str(DATA), "--out", str(out), "--precision", "int4"])
    fast = tmp_path / "fast.csv"
    args = parser.parse_args([str(DATA), "--out", str(fast), "--model", str(bundle_dir),
                              "--workers", "0", "--fast", "--no-progress"])
    assert cli.run(args) == 0
    assert (args.members, args.precision, args.no_tta) == (1, resolve_precision("auto"), True)
    assert "band_gap_std_eV" not in pd.read_csv(fast).columns
    # with the default model, --fast switches to the bundled one-network model
    args = parser.parse_args([str(DATA), "--out", str(fast), "--fast"])
    run_args = []
    monkeypatch.setattr("fastgap.screening.predict_to_file",
                        lambda inputs, out, config, rejects=None: run_args.append(config))
    assert cli.run(args) == 0
    assert (run_args[0].model, run_args[0].members, run_args[0].precision,
            run_args[0].tta) == ("fast", 0, resolve_precision("auto"), False)
    # an explicit precision is kept in fast mode
    assert cli.run(parser.parse_args([str(DATA), "--out", str(fast), "--fast",
                                      "--precision", "fp32"])) == 0
    assert (run_args[1].model, run_args[1].precision) == ("fast", "fp32")
    assert cli.run(parser.parse_args([str(DATA), "--out", str(fast)])) == 0
    assert (run_args[2].model, run_args[2].precision) == ("default", "fp32")
