"""scripts/evaluate_ensemble.py: runs of one task scored alone and as a mean prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastgap.checkpoint import load_model
from fastgap.featurize import FeaturizeConfig, featurize
from fastgap.model import ModelConfig, predict_dataset
from fastgap.store import Store
from fastgap.train import TrainConfig, train
from fastgap.training.run import prepare_data

DATA = Path(__file__).parent / "data" / "predict" / "mp100.jsonl"
TINY = ModelConfig(embed_dim=8, atom_hidden=8, struct_hidden=8, head_sizes=(8,))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    root = tmp_path_factory.mktemp("ens")
    store = root / "s.zarr"
    featurize([DATA], store, FeaturizeConfig(workers=0, progress=False))
    out = []
    for seed, target in ((0, "band_gap_eV"), (1, "band_gap_eV"), (0, "is_metal")):
        cfg = TrainConfig(store=str(store), out=str(root / f"{target}_{seed}"), targets=[target],
                          epochs=1, seed=seed, model=TINY, progress=False, device="cpu",
                          batch_size=32, max_z=85)
        out.append(train(cfg))
    return store, out[:2], out[2]


def test_ensemble_is_the_mean_prediction(runs, load_script, tmp_path: Path, capsys) -> None:
    store, (a, b), _ = runs
    script = load_script("evaluate_ensemble")
    assert script.main([str(a), str(b), "--store", str(store), "--out",
                        str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert "| band_gap_eV | test | mae |" in capsys.readouterr().out
    cfg = TrainConfig(**{**json.loads((a / "config.json").read_text()), "store": str(store)})
    dataset, split = prepare_data(cfg, Store.open(store).load())
    preds = [predict_dataset(load_model(r / "best.safetensors")[0], dataset, split["test"],
                             tta=True)[:, 0] for r in (a, b)]
    true = dataset.targets[split["test"]].double().numpy()[:, 0]
    got = result["ensemble"]["test"]["tta"]["band_gap_eV"]["mae"]
    assert got == pytest.approx(np.mean(np.abs((preds[0] + preds[1]) / 2 - true)), rel=1e-6)
    singles = [json.loads((r / "metrics.json").read_text())["test"]["tta"]["band_gap_eV"]["mae"]
               for r in (a, b)]
    assert result["single"]["test"]["tta"]["band_gap_eV"]["mae"]["mean"] == pytest.approx(
        np.mean(singles))
    assert got <= np.mean(singles) + 1e-12


def test_runs_of_different_tasks_are_refused(runs, load_script) -> None:
    store, (a, _), metal = runs
    with pytest.raises(ValueError, match=r"differs from .* in \['targets'\]"):
        load_script("evaluate_ensemble").main([str(a), str(metal), "--store", str(store)])


def test_runs_applied_to_another_split(runs, load_script, tmp_path: Path, capsys) -> None:
    """--split/--target: the runs' output scored on a split they were not trained with."""
    store, (a, b), metal = runs
    ids = list(Store.open(store).ids.astype(str))
    split = tmp_path / "other.json"
    split.write_text(json.dumps({"train": [], "val": ids[:30], "test": ids[30:60] + ["absent"]}))
    script = load_script("evaluate_ensemble")
    assert script.main([str(a), str(b), "--store", str(store), "--split", str(split),
                        "--target", "band_gap_eV", "--out", str(tmp_path / "o.json")]) == 0
    got = json.loads((tmp_path / "o.json").read_text())
    assert got["n"] == {"val": 30, "test": 30}  # an id the store lacks is skipped
    data = Store.open(store).load()
    cfg = TrainConfig(**{**json.loads((a / "config.json").read_text()), "store": str(store)})
    dataset, _ = prepare_data(cfg, data)
    idx = np.arange(30, 60)
    preds = [predict_dataset(load_model(r / "best.safetensors")[0], dataset, idx, tta=True)[:, 0]
             for r in (a, b)]
    true = np.asarray(data.properties["band_gap_eV"])[idx]
    assert got["ensemble"]["test"] == pytest.approx(
        np.mean(np.abs((preds[0] + preds[1]) / 2 - true)), rel=1e-5)
    with pytest.raises(ValueError, match="predicts \\['is_metal'\\], not 'band_gap_eV'"):
        script.main([str(metal), "--store", str(store), "--split", str(split),
                     "--target", "band_gap_eV"])
    with pytest.raises(ValueError, match="the store has no 'is_metal'"):
        script.main([str(a), "--store", str(store), "--split", str(split),
                     "--target", "is_metal"])


def test_suite_derived_targets_are_added(load_script) -> None:
    """Runs of a `fastgap bench` task with a derived target (log10 of a modulus) can be
    scored from the plain store: the script derives the target by the task's rule."""
    from types import SimpleNamespace

    data = SimpleNamespace(properties={"K_VRH_GPa": np.array([100.0, 0.0, np.nan]),
                                       "G_VRH_GPa": np.array([10.0, 1.0, 1.0])})
    load_script("evaluate_ensemble").add_suite_targets(data, ["log10_K_VRH", "band_gap_eV"])
    np.testing.assert_array_equal(data.properties["log10_K_VRH"], [2.0, np.nan, np.nan])
    assert "log10_G_VRH" not in data.properties and "band_gap_eV" not in data.properties
