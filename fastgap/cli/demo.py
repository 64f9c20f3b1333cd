"""``fastgap demo``: screen the shipped example crystals with the bundled model, then (with
the bundled ``qm9`` model) predict the example molecules' orbital energies."""

from __future__ import annotations

import argparse
import math

help = ("predict the shipped example crystals (Si, GaAs, NaCl, TiO2, Cu, ...) and molecules "
        "against DFT")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="fastgap-demo", metavar="DIR",
                        help="directory for parity.png and predictions.csv")
    parser.add_argument("--model", default="default",
                        help="'default' (bundled ensemble), a bundle or run directory, or a file")
    parser.add_argument("--backend", default="auto", help="neighbour-list backend")
    parser.add_argument("--no-molecules", action="store_true",
                        help="skip the example molecules (QM9 HOMO / LUMO / gap)")


def _fmt(value: float, width: int = 6) -> str:
    return f"{'-':>{width}}" if value is None or math.isnan(value) else f"{value:{width}.2f}"


def format_table(table) -> str:
    """One line per example: name, split, DFT gap, prediction (± std), p_metal, |error|."""
    has_std = "band_gap_std_eV" in table
    header = (f"{'example':<24} {'split':<5} {'DFT':>6} {'pred':>6} {'± std':>6} "
              f"{'p_metal':>7} {'|err|':>6}   (eV)")
    lines = [header]
    for row in table.itertuples(index=False):
        std = row.band_gap_std_eV if has_std else float("nan")
        lines.append(f"{row.name[:24]:<24} {row.split:<5} {_fmt(row.dft_band_gap_eV)} "
                     f"{_fmt(row.band_gap_eV)} {_fmt(std)} {_fmt(row.p_metal, 7)} "
                     f"{_fmt(row.abs_error_eV)}")
    return "\n".join(lines)


def format_molecules(table) -> str:
    """One line per molecule: id, SMILES, atoms, DFT and predicted gap, HOMO and LUMO."""
    header = (f"{'molecule':<11} {'SMILES':<20} {'atoms':>5}   {'gap DFT':>7} {'pred':>6}   "
              f"{'HOMO DFT':>8} {'pred':>6}   {'LUMO DFT':>8} {'pred':>6}   (eV)")
    lines = [header]
    for row in table.itertuples(index=False):
        lines.append(f"{row.id:<11} {row.smiles[:20]:<20} {row.n_atoms:>5}   "
                     f"{_fmt(row.dft_gap_eV, 7)} {_fmt(row.gap_eV)}   "
                     f"{_fmt(row.dft_homo_eV, 8)} {_fmt(row.homo_eV)}   "
                     f"{_fmt(row.dft_lumo_eV, 8)} {_fmt(row.lumo_eV)}")
    return "\n".join(lines)


def run_molecules(args: argparse.Namespace) -> None:
    """The molecule part of the demo, when the bundled qm9 model is installed."""
    from fastgap.ensemble import CARD_NAME, default_bundle_dir
    from fastgap.examples import run_molecule_demo
    from fastgap.screening import PredictConfig

    if not (default_bundle_dir("qm9") / CARD_NAME).is_file():
        print("\nmolecules: skipped (the bundled qm9 model is not installed)")
        return
    config = PredictConfig(model="qm9", workers=0, backend=args.backend, progress=False)
    result = run_molecule_demo(args.out, "qm9", config)
    print(f"\nQM9 test-split molecules, bundled qm9 model:\n{format_molecules(result.table)}")
    maes = ", ".join(f"{t.removesuffix('_eV')} {v:.3f}" for t, v in result.mae.items())
    print(f"\nMAE over {len(result.table)} molecules (eV): {maes}")
    print(f"predictions: {result.predictions_csv}")


def run(args: argparse.Namespace) -> int:
    from fastgap.examples import run_demo
    from fastgap.screening import PredictConfig

    config = PredictConfig(model=args.model, workers=0, backend=args.backend, progress=False)
    result = run_demo(args.out, args.model, config)
    print(format_table(result.table))
    print(f"\nMAE over {result.n_with_dft} examples with a DFT value: {result.mae:.3f} eV "
          f"(test split only, {result.n_test} examples: {result.mae_test:.3f} eV)")
    print(f"parity plot: {result.parity_png}\npredictions: {result.predictions_csv}")
    if not args.no_molecules:
        run_molecules(args)
    return 0
