"""Fine-tuning (``TrainConfig.init_from``): weights, output rows, normaliser, errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from fastgap.bundle_card import pack_bundle, write_model_card
from fastgap.checkpoint import load_model
from fastgap.model import FastGapModel, ModelConfig, predict_batch
from fastgap.synthetic import synthetic_featurized
from fastgap.train import TrainConfig, train
from fastgap.training.finetune import initialise

TINY = ModelConfig(embed_dim=8, atom_hidden=16, struct_hidden=16, head_sizes=(16,),
                   distance_encoding="rbf", rbf_bins=8)


def _data(n: int = 50, seed: int = 0):
    data = synthetic_featurized(n, np.random.default_rng(seed), max_atoms=6)
    gap = np.asarray(data.properties["band_gap_eV"])
    data.properties["density_like"] = 3.0 + 0.5 * gap  # a second regression property
    return data


def _config(tmp_path, name: str, **kw) -> TrainConfig:
    base = {"out": str(tmp_path / name), "epochs": 2, "batch_size": 8, "progress": False,
            "threads": 1}
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("src")
    cfg = _config(tmp, "src", model=TINY, targets=["band_gap_eV", "is_metal"])
    return train(cfg, _data())


def _with_normaliser(source: FastGapModel, n_out: int, mean, std, is_class) -> FastGapModel:
    model = FastGapModel(ModelConfig.from_dict({**source.config.to_dict(), "n_outputs": n_out}))
    model.target_mean.copy_(torch.tensor(mean, dtype=torch.float64))
    model.target_std.copy_(torch.tensor(std, dtype=torch.float64))
    model.target_is_class.copy_(torch.tensor(is_class))
    return model.eval()


def test_kept_rows_reproduce_the_source_predictions(source_run) -> None:
    source, meta = load_model(source_run / "best.safetensors")
    # reordered targets, another normaliser, and one target the source never predicted
    model = _with_normaliser(source, 3, [0.0, 0.7, 5.0], [1.0, 2.5, 0.3], [True, False, False])
    report = initialise(model, source, meta["targets"], ["is_metal", "band_gap_eV", "other"])
    assert report == {"kept": ["is_metal", "band_gap_eV"], "fresh": ["other"]}
    data = _data(20, seed=3)
    want = predict_batch(source, data, tta=False)
    got = predict_batch(model, data, tta=False)
    np.testing.assert_allclose(got[:, 0], want[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[:, 1], want[:, 0], rtol=1e-5, atol=1e-5)
    for name, tensor in source.state_dict().items():
        if name.startswith(("atom_lstm", "embed", "attn", "head.0")):
            torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)


def test_kind_change_gets_a_fresh_row(source_run) -> None:
    source, meta = load_model(source_run / "best.safetensors")
    model = _with_normaliser(source, 1, [0.0], [1.0], [True])  # band_gap_eV as a class column
    assert initialise(model, source, meta["targets"], ["band_gap_eV"])["fresh"] == ["band_gap_eV"]


def test_fine_tune_run_takes_the_architecture_and_reports(source_run, tmp_path) -> None:
    cfg = _config(tmp_path, "ft", targets=["density_like", "band_gap_eV"],
                  init_from=str(source_run), model=ModelConfig(dropout=0.2))
    out = train(cfg, _data())
    init = json.loads((out / "init.json").read_text())
    assert init["kept"] == ["band_gap_eV"] and init["fresh"] == ["density_like"]
    assert init["checkpoint"].endswith("best.safetensors") and len(init["sha256"]) == 64
    resolved = json.loads((out / "config.json").read_text())["model"]
    assert resolved["atom_hidden"] == 16 and resolved["rbf_bins"] == 8
    assert resolved["dropout"] == 0.2 and resolved["n_outputs"] == 2
    model, meta = load_model(out / "best.safetensors")
    assert model.config.n_outputs == 2 and meta["train_config"]["init_from"] == str(source_run)
    # the normaliser is the new training split's, not the source's
    split = json.loads((out / "split.json").read_text())
    data = _data()
    pos = {i: n for n, i in enumerate(data.ids)}
    train_vals = np.asarray(data.properties["density_like"])[[pos[i] for i in split["train"]]]
    assert model.target_mean[0].item() == pytest.approx(train_vals.mean())
    # a bundle made from it names the checkpoint it started from
    bundle = pack_bundle(tmp_path / "bundle", [out], [source_run])
    card = json.loads((bundle / "card.json").read_text())
    source_sha = hashlib.sha256((source_run / "best.safetensors").read_bytes()).hexdigest()
    assert card["provenance"]["gap_0.safetensors"]["init_from"] == {"run": source_run.name,
                                                                    "sha256": source_sha}
    assert card["provenance"]["metal_0.safetensors"] == {
        "run": source_run.name, "sha256": source_sha, "seed": 0, "epochs": 2,
        "training_periodicity": {"periodic": 40, "partial": 0, "molecule": 0}}
    text = write_model_card(bundle).read_text()
    assert f"gap_0.safetensors <- run `ft`, seed 0, 2 epochs at most, fine-tuned from " \
           f"`{source_run.name}` (sha256 {source_sha[:12]})" in text
    assert "metal_0.safetensors <- run `src`, seed 0, 2 epochs at most, trained from " \
           "scratch" in text


def test_resume_of_a_fine_tune_equals_straight_through(source_run, tmp_path,
                                                       learning_history) -> None:
    kw = {"targets": ["band_gap_eV"], "init_from": str(source_run), "epochs": 3}
    straight = train(_config(tmp_path, "a", **kw), _data())
    train(_config(tmp_path, "b", stop_after_epochs=1, **kw), _data())
    resumed = train(_config(tmp_path, "b", resume=True, **kw), _data())
    assert learning_history(straight) == learning_history(resumed)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [({"model": ModelConfig(atom_hidden=32)}, ValueError,
      r"differs from the checkpoint's \(atom_hidden: 32 vs 16\)"),
     ({"init_from": "nowhere"}, FileNotFoundError, "init_from: no checkpoint at 'nowhere"),
     ])
def test_init_errors(source_run, tmp_path, kw, error, match) -> None:
    cfg = _config(tmp_path, "bad", **{"init_from": str(source_run), **kw})
    with pytest.raises(error, match=match):
        train(cfg, _data())


def test_init_refuses_other_neighbour_count(source_run, tmp_path) -> None:
    data = synthetic_featurized(30, np.random.default_rng(0), k=12, max_atoms=4)
    with pytest.raises(ValueError, match="trained with k=19 neighbours, the data has k=12"):
        train(_config(tmp_path, "k12", init_from=str(source_run)), data)


def test_packaged_pretrained_model_fine_tunes(tmp_path) -> None:
    cfg = _config(tmp_path, "ft_packaged", epochs=1, init_from="pretrained",
                  targets=["band_gap_eV"])
    out = train(cfg, _data(30))
    init = json.loads((out / "init.json").read_text())
    assert init["source_targets"] == ["formation_energy_eV_per_atom", "band_gap_eV"]
    assert init["kept"] == ["band_gap_eV"]
    assert init["checkpoint"].endswith("models/pretrained/model.safetensors")
    card = json.loads((pack_bundle(tmp_path / "b", [out], []) / "card.json").read_text())
    start = card["provenance"]["gap_0.safetensors"]["init_from"]
    assert start == {"run": "pretrained", "sha256": init["sha256"],
                     "shipped": "fastgap/models/pretrained"}


def test_missing_packaged_model_is_named(tmp_path, monkeypatch) -> None:
    from fastgap.training import finetune

    monkeypatch.setattr(finetune, "packaged_path", lambda: tmp_path / "gone.safetensors")
    with pytest.raises(FileNotFoundError, match="packaged pretrained model is missing"):
        finetune.checkpoint_path("pretrained")
