"""The symmetry study on trained models: prediction spread over equivalent descriptions.

    python scripts/symmetry_study.py --data ../shared/data/mp_gap36k/structures.jsonl.gz \
        --split benchmarks/splits/mp_gap36k.json --n 200 --max-atoms 40 \
        --model design=benchmarks/runs/gap_design_s0/best.safetensors \
        --model best=benchmarks/runs/gap_best_s0/best.safetensors \
        --out benchmarks/symmetry/study.json

Crystals: the first ``--n`` test-split structures (sorted ids) with a non-zero band gap,
elements Z <= 85 and at most ``--max-atoms`` atoms (supercells multiply the size by 8).
For every model, family (`fastgap.symmetry.FAMILIES`) and prediction mode (with and
without averaging over axis-swap orders) it reports the mean and max over crystals of the
std of the predictions of the original and its equivalent descriptions (eV).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from fastgap.checkpoint import load_model
    from fastgap.features import FeaturizerConfig
    from fastgap.readers import iter_structures
    from fastgap.structures import Structure
    from fastgap.symmetry import SymmetryConfig, symmetry_spread

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", type=Path, required=True)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--max-atoms", type=int, default=40)
    p.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT")
    p.add_argument("--variants", type=int, default=4)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    test = set(json.loads(args.split.read_text())["test"])
    chosen: list[Structure] = []
    for s in iter_structures([args.data]):
        if (isinstance(s, Structure) and s.id in test and s.n_atoms <= args.max_atoms
                and s.properties.get("band_gap_eV", 0.0) > 0 and int(s.numbers.max()) <= 85):
            chosen.append(s)
    chosen = sorted(chosen, key=lambda s: s.id)[: args.n]
    rows = []
    for spec in args.model:
        name, path = spec.split("=", 1)
        model, meta = load_model(path)
        for row in symmetry_spread(model, chosen, meta["targets"], FeaturizerConfig(),
                                   SymmetryConfig(n_variants=args.variants)):
            rows.append({"model": name, "checkpoint": path,
                         "pooling": model.config.pooling, **row})
            print(json.dumps(rows[-1]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
