"""``fastgap demo``: screen the shipped example crystals with the bundled model."""

from __future__ import annotations

import argparse
import math

help = "predict the shipped example crystals (Si, GaAs, NaCl, TiO2, Cu, ...) against DFT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="fastgap-demo", metavar="DIR",
                        help="directory for parity.png and predictions.csv")
    parser.add_argument("--model", default="default",
                        help="'default' (bundled ensemble), a bundle or run directory, or a file")
    parser.add_argument("--backend", default="auto", help="neighbour-list backend")


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


def run(args: argparse.Namespace) -> int:
    from fastgap.examples import run_demo
    from fastgap.screening import PredictConfig

    config = PredictConfig(model=args.model, workers=0, backend=args.backend, progress=False)
    result = run_demo(args.out, args.model, config)
    print(format_table(result.table))
    print(f"\nMAE over {result.n_with_dft} examples with a DFT value: {result.mae:.3f} eV "
          f"(test split only, {result.n_test} examples: {result.mae_test:.3f} eV)")
    print(f"parity plot: {result.parity_png}\npredictions: {result.predictions_csv}")
    return 0
