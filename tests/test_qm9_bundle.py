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
    crystal = tmp_path / "POSCAR"  # diamond: elements the model knows, but periodic
    crystal.write_text("diamond\n3.567\n1 0 0\n0 1 0\n0 0 1\nC\n8\nDirect\n"
                       "0 0 0\n0 .5 .5\n.5 0 .5\n.5 .5 0\n"
                       ".25 .25 .25\n.25 .75 .75\n.75 .25 .75\n.75 .75 .25\n")
    summary = predict_to_file([crystal], tmp_path / "p.csv",
                              PredictConfig(model=str(qm9["bundle"]), workers=0, progress=False))
    assert summary.predicted == 0 and summary.rejected == 1
    assert "trained on molecule structures only" in (tmp_path / "p.rejects.csv").read_text()


def test_inputs_with_elements_outside_training_are_rejected(qm9, tmp_path: Path) -> None:
    from fastgap.checkpoint import read_metadata
    from fastgap.domain import element_set

    data = Store.open(qm9["store"]).load()
    where = {i: n for n, i in enumerate(data.ids.astype(str))}
    train = [where[i] for i in json.loads(SPLIT.read_text())["train"]]
    elements = element_set(data.numbers, data.atom_ptr, train)
    assert set(elements) <= {1, 6, 7, 8, 9} and {1, 6} <= set(elements)
    card = json.loads((qm9["bundle"] / "card.json").read_text())
    assert all(p["training_elements"] == elements for p in card["provenance"].values())
    # training writes the same list into every checkpoint's metadata
    assert read_metadata(qm9["runs"][0] / "best.safetensors")["training_elements"] == elements
    assert "- elements: H, C" in (qm9["bundle"] / "MODEL_CARD.md").read_text()
    xyz = tmp_path / "mols.extxyz"
    xyz.write_text("5\nid=chloromethane\nC 0 0 0\nCl 0 0 1.78\nH 1.03 0 -0.36\n"
                   "H -0.51 0.89 -0.36\nH -0.51 -0.89 -0.36\n"
                   "3\nid=water\nO 0 0 0.117\nH 0 0.757 -0.467\nH 0 -0.757 -0.467\n")
    summary = predict_to_file([xyz], tmp_path / "p.csv",
                              PredictConfig(model=str(qm9["bundle"]), workers=0, progress=False))
    assert (summary.predicted, summary.rejected) == (1, 1)
    reason = (tmp_path / "p.rejects.csv").read_text()
    assert "element Cl (Z=17) is outside the model's training elements (H, C" in reason


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


def test_bundled_qm9_model_loads_offline() -> None:
    """`--model qm9`: HOMO and LUMO from the three-target run, the gap the mean of both runs;
    molecules only; the card's scores are on the fixed split's test molecules."""
    from fastgap.applicability import trained_periodicity
    from fastgap.ensemble import default_bundle_dir
    from fastgap.examples import EXAMPLES_DIR

    if not (default_bundle_dir("qm9") / "card.json").is_file():
        pytest.skip("no qm9 model bundle committed yet (scripts/make_qm9_bundle.py)")
    bundle = load_bundle("qm9")
    assert len(bundle.others) == 2 and not bundle.band_gap and not bundle.metal
    assert trained_periodicity(bundle)[0] == {"molecule"}
    assert bundle.card["metrics"]["n"]["test"] == 13083
    df = predict([EXAMPLES_DIR / "molecules.extxyz"], "qm9",
                 PredictConfig(workers=0, progress=False))
    assert list(df.columns) == ["id", *ORBITALS] and len(df) == 12
    assert (df["homo_eV"] < df["lumo_eV"]).all()
