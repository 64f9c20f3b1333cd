"""Bundles of other properties (``others`` members) and scripts/make_qm9_bundle.py: QM9 runs
packed into a molecular model whose outputs are the runs' targets, scored on the split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fastgap.checkpoint import load_model
from fastgap.data import StructureDataset
from fastgap.ensemble import load_bundle
from fastgap.featurize import FeaturizeConfig, featurize
from fastgap.model import ModelConfig, predict_dataset
from fastgap.screening import PredictConfig, predict, predict_to_file
from fastgap.store import Store
from fastgap.train import TrainConfig, train

DATA = Path(__file__).parent / "data" / "bench" / "qm9" / "structures.jsonl.gz"
SPLIT = Path(__file__).parent / "data" / "bench" / "splits" / "qm9.json"
CRYSTAL = Path(__file__).parents[1] / "fastgap" / "examples" / "cifs" / "mp-1143.cif"
TINY = ModelConfig(embed_dim=8, atom_hidden=8, struct_hidden=8, head_sizes=(8,))
ORBITALS = ["homo_eV", "lumo_eV", "gap_eV"]


@pytest.fixture(scope="module")
def qm9(tmp_path_factory: pytest.TempPathFactory, load_script) -> dict:
    """A 30-molecule store, a gap-only and a three-target run on the fixture split, and the
    bundle the script packs from them."""
    root = tmp_path_factory.mktemp("qm9")
    store = root / "qm9.zarr"
    featurize([DATA], store, FeaturizeConfig(workers=0, progress=False))
    runs = []
    for name, targets in (("gap", ["gap_eV"]), ("orbitals", ORBITALS)):
        cfg = TrainConfig(store=str(store), out=str(root / name), targets=targets, epochs=2,
                          model=TINY, progress=False, device="cpu", batch_size=8,
                          split_file=str(SPLIT))
        runs.append(train(cfg))
    out = root / "bundle"
    load_script("make_qm9_bundle").main([*map(str, runs), "--store", str(store), "--split",
                                         str(SPLIT), "--data", str(DATA), "--out", str(out)])
    return {"store": store, "runs": runs, "bundle": out}


def test_card_lists_other_members_and_their_outputs(qm9) -> None:
    card = json.loads((qm9["bundle"] / "card.json").read_text())
    assert card["members"] == {"band_gap": [], "metal": [],
                               "others": ["model_0.safetensors", "model_1.safetensors"]}
    assert "combination_rule" not in card
    text = (qm9["bundle"] / "MODEL_CARD.md").read_text()
    assert "`gap_eV`: mean of model_0.safetensors, model_1.safetensors" in text
    assert "`homo_eV`: mean of model_1.safetensors" in text
    assert "Combination rule" not in text and "band_gap_std_eV" not in text
    bundle = load_bundle(qm9["bundle"])
    assert not bundle.band_gap and not bundle.metal and len(bundle.others) == 2


def test_card_metrics_are_the_mean_prediction_on_the_split(qm9) -> None:
    card = json.loads((qm9["bundle"] / "card.json").read_text())
    data = Store.open(qm9["store"]).load()
    where = {i: n for n, i in enumerate(data.ids.astype(str))}
    test = np.sort([where[i] for i in json.loads(SPLIT.read_text())["test"]])
    dataset = StructureDataset(data)
    gap_only, orbitals = (predict_dataset(load_model(r / "best.safetensors")[0], dataset, test,
                                          tta=True) for r in qm9["runs"])
    truth = {t: data.properties[t][test] for t in ORBITALS}
    expect = {"gap_eV": (gap_only[:, 0] + orbitals[:, 2]) / 2, "homo_eV": orbitals[:, 0],
              "lumo_eV": orbitals[:, 1]}
    assert card["metrics"]["n"] == {"val": 5, "test": 5}
    for target, pred in expect.items():
        mae = float(np.mean(np.abs(pred - truth[target])))
        assert card["metrics"]["test"][target]["mae"] == pytest.approx(mae, rel=1e-5)


def test_predict_writes_the_targets_and_rejects_crystals(qm9, tmp_path: Path) -> None:
    df = predict([DATA], qm9["bundle"], PredictConfig(workers=0, progress=False))
    assert list(df.columns) == ["id", "gap_eV", "homo_eV", "lumo_eV"]
    assert len(df) == 30 and np.isfinite(df[ORBITALS].to_numpy()).all()
    summary = predict_to_file([CRYSTAL], tmp_path / "p.csv",
                              PredictConfig(model=str(qm9["bundle"]), workers=0, progress=False))
    assert summary.predicted == 0 and summary.rejected == 1
    assert "molecule" in (tmp_path / "p.rejects.csv").read_text()


def test_a_run_on_another_split_is_refused(qm9, load_script, tmp_path: Path) -> None:
    other = json.loads(SPLIT.read_text())
    other["val"], other["test"] = other["test"], other["val"]
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"split.json differs from --split in \['val', 'test'\]"):
        load_script("make_qm9_bundle").main([str(qm9["runs"][0]), "--store", str(qm9["store"]),
                                             "--split", str(path), "--out",
                                             str(tmp_path / "b")])


def test_card_splits_the_test_error_by_molecule_size(qm9) -> None:
    card = json.loads((qm9["bundle"] / "card.json").read_text())
    rows = card["metrics"]["test_by_atoms"]
    assert sum(r["n"] for r in rows.values()) == card["metrics"]["n"]["test"]
    overall = card["metrics"]["test"]["gap_eV"]["mae"]
    weighted = sum(r["n"] * r["gap_eV"] for r in rows.values() if r["n"]) / 5
    assert weighted == pytest.approx(overall, rel=1e-6)
    assert all(r["gap_eV"] is None for r in rows.values() if r["n"] == 0)
