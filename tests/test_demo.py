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


@pytest.fixture(scope="module")
def orbital_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HOMO / LUMO / gap model trained on the QM9 fixture in seconds."""
    from fastgap.features import featurize_structures
    from fastgap.readers import read_structures

    qm9 = Path(__file__).parent / "data" / "bench" / "qm9" / "structures.jsonl.gz"
    batch, _ = featurize_structures(read_structures([qm9]))
    small = ModelConfig(embed_dim=8, atom_hidden=8, struct_hidden=8, head_sizes=(8,))
    cfg = TrainConfig(out=str(tmp_path_factory.mktemp("orb")), epochs=1, model=small,
                      targets=["homo_eV", "lumo_eV", "gap_eV"], progress=False,
                      compile="off", device="cpu", batch_size=8)
    return train(cfg, batch)


def test_example_molecules_are_three_test_molecules_per_size() -> None:
    from fastgap.examples import EXAMPLES_DIR
    from fastgap.readers import read_structures

    table = pd.read_csv(EXAMPLES_DIR / "molecules.csv")
    mols = read_structures([EXAMPLES_DIR / "molecules.extxyz"])
    assert [m.id for m in mols] == list(table["id"]) and len(table) == 12
    assert [len(m.numbers) for m in mols] == list(table["n_atoms"])
    assert not any(any(m.pbc) for m in mols) and set(table["split"]) == {"test"}
    sizes = pd.cut(table["n_atoms"], [0, 9, 14, 19, 29]).value_counts()
    assert (sizes == 3).all()
    gap = table["dft_lumo_eV"] - table["dft_homo_eV"]
    # QM9 gives each energy to 1e-4 Ha (2.7 meV), so the gap and LUMO - HOMO differ by that
    np.testing.assert_allclose(gap, table["dft_gap_eV"], rtol=0, atol=3e-3)


def test_molecule_demo_compares_with_dft(orbital_run: Path, tmp_path: Path) -> None:
    from fastgap.examples import MOLECULE_TARGETS, run_molecule_demo

    result = run_molecule_demo(tmp_path / "m", orbital_run)
    table = result.table
    assert len(table) == 12 and table[list(MOLECULE_TARGETS)].notna().all().all()
    for t in MOLECULE_TARGETS:
        want = float((table[t] - table[f"dft_{t}"]).abs().mean())
        assert result.mae[t] == pytest.approx(want, rel=1e-12)
    assert list(pd.read_csv(result.predictions_csv)["id"]) == list(table["id"])


def test_molecule_demo_needs_an_orbital_model(run_dir: Path, tmp_path: Path) -> None:
    from fastgap.examples import run_molecule_demo

    config = PredictConfig(workers=0, progress=False, any_periodicity=True)
    with pytest.raises(ValueError, match=r"does not predict \['homo_eV', 'lumo_eV', 'gap_eV'\]"):
        run_molecule_demo(tmp_path / "m", run_dir, config)


def test_demo_cli_skips_molecules_without_the_qm9_model(run_dir: Path, tmp_path: Path,
                                                        monkeypatch, capsys) -> None:
    from fastgap import ensemble

    real = ensemble.default_bundle_dir
    monkeypatch.setattr(ensemble, "default_bundle_dir",
                        lambda name="default": tmp_path / "none" if name == "qm9" else real(name))
    assert main(["demo", "--model", str(run_dir), "--out", str(tmp_path / "d")]) == 0
    assert "molecules: skipped (the bundled qm9 model is not installed)" in capsys.readouterr().out
