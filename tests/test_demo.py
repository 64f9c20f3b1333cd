"""`fastgap demo`: the shipped examples, the table, the MAE, the parity plot, the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fastgap.cli import main
from fastgap.examples import examples_table, run_demo
from fastgap.model import ModelConfig
from fastgap.screening import PredictConfig
from fastgap.train import TrainConfig, train

DATA = Path(__file__).parent / "data" / "predict"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny band-gap + is_metal model trained here in seconds."""
    from fastgap.features import featurize_structures
    from fastgap.readers import read_structures

    batch, _ = featurize_structures(read_structures([DATA / "mp100.jsonl"]))
    small = ModelConfig(embed_dim=8, atom_hidden=8, struct_hidden=8, head_sizes=(8,))
    cfg = TrainConfig(out=str(tmp_path_factory.mktemp("run")), targets=["band_gap_eV", "is_metal"],
                      epochs=1, model=small, progress=False, compile="off", device="cpu",
                      max_z=85, batch_size=32)
    return train(cfg, batch)


def test_examples_table_is_complete() -> None:
    table = examples_table()
    for name in ("Si", "GaAs", "NaCl", "TiO2", "Cu", "Fe", "Al2O3"):
        assert name in set(table["formula"])
    assert "TiO2 (rutile)" in set(table["name"])
    assert set(table["split"]) <= {"train", "val", "test", "none"}
    assert (table["split"] == "test").sum() >= 30
    assert table["id"].is_unique and all(Path(p).is_file() for p in table["path"])
    assert table.loc[table["split"] == "none", "dft_band_gap_eV"].isna().all()


def test_demo_predicts_every_example(run_dir: Path, tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", run_dir, PredictConfig(workers=0, progress=False))
    table = result.table
    assert table["band_gap_eV"].notna().all()  # every example predicted
    known = table["dft_band_gap_eV"].notna()
    want = float(np.abs(table["band_gap_eV"] - table["dft_band_gap_eV"])[known].mean())
    assert result.mae == pytest.approx(want, rel=1e-12)
    assert result.n_with_dft == int(known.sum()) == len(table) - 1
    assert result.parity_png.stat().st_size > 0
    saved = pd.read_csv(result.predictions_csv)
    assert list(saved["id"]) == list(table["id"])


def test_demo_cli_prints_table_and_plot_path(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["demo", "--model", str(run_dir), "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "Si (diamond)" in out and "MAE over 43 examples" in out
    assert str(tmp_path / "d" / "parity.png") in out


def test_demo_without_bundle_is_a_clear_error(monkeypatch, tmp_path: Path, capsys) -> None:
    from fastgap import ensemble

    monkeypatch.setattr(ensemble, "default_bundle_dir", lambda name="default": tmp_path / "missing")
    assert main(["demo", "--out", str(tmp_path / "d")]) == 2
    assert "default model bundle is not installed" in capsys.readouterr().err


def test_predict_cli_writes_csv_and_rejects(run_dir: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.cif"
    bad.write_text("data_bad\n")
    out = tmp_path / "p.csv"
    argv = ["predict", str(DATA / "mp100.jsonl"), str(bad), "--model", str(run_dir),
            "--out", str(out), "--workers", "0", "--no-progress"]
    assert main(argv) == 0
    assert "predicted 100, rejected 1" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == 100
    assert list(pd.read_csv(tmp_path / "p.rejects.csv")["id"]) == ["bad"]
