"""Where a bundle's metal / non-metal call goes wrong on the fixed mp_gap36k test split.

Tabulates, by atoms per cell and by DFT gap, how often gapped structures are called metals
(``p_metal >= 0.5``, the mean of the bundle's classifiers with axis-swap averaging, as
``fastgap predict`` does) and metals are called gapped. Structures with an element above
the bundle's Z <= 85 filter are left out, as in ``scripts/evaluate_screening.py``.

    python scripts/metal_errors.py --store STORE [--model fastgap/models/default]
        [--split benchmarks/splits/mp_gap36k.json] [--out errors.json]

STORE: ``fastgap featurize ../shared/data/mp_gap36k/structures.jsonl.gz --out STORE``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

SIZE_BINS = ((1, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 10**6))
GAP_BINS = ((0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, float("inf")))


def error_table(p_metal: np.ndarray, gap: np.ndarray, n_atoms: np.ndarray) -> dict:
    """Error rates of the call ``p_metal >= 0.5`` against ``gap == 0``.

    Args:
        p_metal: (S,) float64 mean classifier probability; gap: (S,) float64 DFT gaps, eV;
        n_atoms: (S,) int atoms per cell.
    """
    metal = gap == 0
    called = p_metal >= 0.5
    by_size = []
    for lo, hi in SIZE_BINS:
        m = (n_atoms >= lo) & (n_atoms <= hi)
        if not m.any():
            continue
        by_size.append({
            "atoms": f"{lo}-{hi}" if hi < 10**6 else f">={lo}", "n": int(m.sum()),
            "metal_fraction": float(metal[m].mean()),
            "accuracy": float((called == metal)[m].mean()),
            "gapped_called_metal": float(called[m & ~metal].mean()) if (m & ~metal).any() else None,
            "metals_called_gapped": float((~called)[m & metal].mean()) if (m & metal).any() else None,
        })  # fmt: skip
    by_gap = []
    for lo, hi in GAP_BINS:
        m = ~metal & (gap > lo) & (gap <= hi)
        by_gap.append({"gap_eV": f"{lo}-{hi}", "n": int(m.sum()),
                       "called_metal": float(called[m].mean()) if m.any() else None})
    return {"n": len(gap), "accuracy": float((called == metal).mean()),
            "by_atoms": by_size, "by_gap": by_gap}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--split", default=str(Path(__file__).parents[1] / "benchmarks" / "splits"
                                           / "mp_gap36k.json"))
    ap.add_argument("--max-z", type=int, default=85)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    from evaluate_screening import test_batch

    from fastgap.ensemble import load_bundle
    from fastgap.screening import predict_featurized

    bundle = load_bundle(args.model)
    if not bundle.metal:
        raise SystemExit(f"model: {args.model!r} has no metal classifier")
    batch, _ = test_batch(args.store, args.split, args.max_z)
    # the classifiers alone, through the prediction path of `fastgap predict`
    classifiers = dataclasses.replace(bundle, band_gap=[], others=[])
    p_metal = predict_featurized(classifiers, batch, tta=True, batch_size=256)["p_metal"]
    table = error_table(p_metal, np.asarray(batch.properties["band_gap_eV"], np.float64),
                        np.diff(batch.atom_ptr))
    print(f"test structures {table['n']}, accuracy {table['accuracy']:.3f}")
    print("atoms      n  metals  accuracy  gapped called metal  metals called gapped")
    for r in table["by_atoms"]:
        print(f"{r['atoms']:>7} {r['n']:>5}  {r['metal_fraction']:.2f}    {r['accuracy']:.3f}"
              f"     {_fmt(r['gapped_called_metal']):>7}              {_fmt(r['metals_called_gapped'])}")
    for r in table["by_gap"]:
        print(f"gap {r['gap_eV']:>9} eV: n {r['n']:>5}, called metal {r['called_metal']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
