"""Example crystals and molecules shipped with fastgap, and the demos that predict them.

``examples.csv`` (see README.md in this folder) lists each example crystal's id, name,
formula, DFT band gap in eV (mp_gap36k, PBE/PBE+U; empty when not in the data set), its
split in ``benchmarks/splits/mp_gap36k.json`` (train / val / test / none) and its CIF file
(`run_demo`). ``molecules.csv`` lists twelve QM9 test-split molecules (geometries in
``molecules.extxyz``) with their DFT (B3LYP) HOMO, LUMO and gap in eV
(`run_molecule_demo`, with the bundled ``qm9`` model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXAMPLES_DIR = Path(__file__).resolve().parent


def examples_table() -> Any:
    """The examples as a pandas DataFrame (one row per crystal, ``examples.csv`` order)."""
    import pandas as pd

    table = pd.read_csv(EXAMPLES_DIR / "examples.csv", dtype={"id": str, "split": str})
    table["path"] = [str(EXAMPLES_DIR / f) for f in table["file"]]
    return table


@dataclass
class DemoResult:
    """The demo's table (examples joined with predictions), its MAEs (eV) and files."""

    table: Any
    mae: float
    mae_test: float
    n_with_dft: int
    n_test: int
    parity_png: Path
    predictions_csv: Path


def run_demo(out_dir: str | Path = "fastgap-demo", model: Any = "default",
             config: Any = None) -> DemoResult:
    """Predict every example crystal, compare with DFT, write a parity PNG and a CSV.

    ``model`` and ``config`` are as in `fastgap.screening.predict`. The MAE is over the
    examples with a DFT value; ``mae_test`` over those from the test split only (the
    well-known crystals are training structures, so their errors flatter the model).
    """
    from fastgap.screening import PredictConfig, predict

    config = config or PredictConfig(workers=0, progress=False)
    table = examples_table()
    preds = predict(list(table["path"]), model, config)
    joined = table.merge(preds, on="id", how="left", validate="one_to_one")
    err = (joined["band_gap_eV"] - joined["dft_band_gap_eV"]).abs()
    joined["abs_error_eV"] = err
    test = joined["split"] == "test"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "predictions.csv"
    joined.drop(columns=["path"]).to_csv(csv_path, index=False)
    png = plot_demo_parity(joined, out / "parity.png")
    return DemoResult(
        table=joined, mae=float(err.mean()), mae_test=float(err[test].mean()),
        n_with_dft=int(err.notna().sum()), n_test=int((test & err.notna()).sum()),
        parity_png=png, predictions_csv=csv_path,
    )  # fmt: skip


MOLECULE_TARGETS = ("homo_eV", "lumo_eV", "gap_eV")


@dataclass
class MoleculeDemoResult:
    """The molecule table (examples joined with predictions), MAE per target (eV), CSV."""

    table: Any
    mae: dict[str, float]
    predictions_csv: Path


def run_molecule_demo(out_dir: str | Path = "fastgap-demo", model: Any = "qm9",
                      config: Any = None) -> MoleculeDemoResult:
    """Predict the example molecules' HOMO, LUMO and gap and compare with QM9's DFT values.

    Writes ``molecules.csv`` (examples, DFT and predicted values, eV) into ``out_dir``.
    """
    import pandas as pd

    from fastgap.screening import PredictConfig, predict

    config = config or PredictConfig(workers=0, progress=False)
    table = pd.read_csv(EXAMPLES_DIR / "molecules.csv", dtype={"id": str})
    preds = predict([EXAMPLES_DIR / "molecules.extxyz"], model, config)
    missing = [t for t in MOLECULE_TARGETS if t not in preds]
    if missing:
        raise ValueError(f"model: the molecule demo needs a model of {list(MOLECULE_TARGETS)}; "
                         f"{model!r} does not predict {missing}")
    joined = table.merge(preds[["id", *MOLECULE_TARGETS]], on="id", how="left",
                         validate="one_to_one")
    mae = {t: float((joined[t] - joined[f"dft_{t}"]).abs().mean()) for t in MOLECULE_TARGETS}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "molecules.csv"
    joined.to_csv(csv_path, index=False)
    return MoleculeDemoResult(table=joined, mae=mae, predictions_csv=csv_path)


def plot_demo_parity(table: Any, path: Path) -> Path:
    """Predicted vs DFT band gap (eV), coloured by split, ensemble std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    rows = table[table["dft_band_gap_eV"].notna()]
    for split, colour in (("test", "tab:blue"), ("val", "tab:green"), ("train", "tab:orange")):
        part = rows[rows["split"] == split]
        if len(part):
            yerr = part.get("band_gap_std_eV")
            ax.errorbar(part["dft_band_gap_eV"], part["band_gap_eV"], yerr=yerr, fmt="o",
                        ms=4, color=colour, label=f"{split} ({len(part)})", elinewidth=0.8)
    hi = float(max(rows["dft_band_gap_eV"].max(), rows["band_gap_eV"].max(), 1.0)) * 1.05
    ax.plot([0, hi], [0, hi], color="k", lw=0.8)
    ax.set_xlim(-0.2, hi)
    ax.set_ylim(-0.2, hi)
    ax.set_xlabel("DFT band gap (eV, mp_gap36k)")
    ax.set_ylabel("predicted band gap (eV)")
    ax.legend(title="split", loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
