"""Write the example molecules of ``fastgap demo``: QM9 test-split molecules, three per size.

    python scripts/make_molecule_examples.py --data ../shared/data/qm9/structures.jsonl.gz

Draws, with ``numpy.random.default_rng(seed)``, three molecules from each size bin (atoms per
molecule, hydrogens included: 1-9, 10-14, 15-19, 20-29) of the test part of ``--split``, and
writes their geometries to ``fastgap/examples/molecules.extxyz`` (one frame each, its id in
the comment line) and their SMILES and DFT orbital energies to ``molecules.csv``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "fastgap" / "examples"
SIZE_BINS = ((1, 9), (10, 14), (15, 19), (20, 29))
PER_BIN = 3
COLUMNS = ("id", "smiles", "n_atoms", "dft_homo_eV", "dft_lumo_eV", "dft_gap_eV", "split")


def test_records(data: Path, split: Path) -> list[dict[str, Any]]:
    """The records of ``data`` (QM9 JSON-lines) whose id is in the test part of ``split``."""
    test = set(json.loads(split.read_text())["test"])
    with gzip.open(data, "rt") as lines:
        return [r for r in map(json.loads, lines) if r["id"] in test]


def draw(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """`PER_BIN` records per `SIZE_BINS` bin, drawn without replacement; sorted by id."""
    rng = np.random.default_rng(seed)
    chosen = []
    for lo, hi in SIZE_BINS:
        pool = sorted((r for r in records if lo <= len(r["species"]) <= hi),
                      key=lambda r: r["id"])
        chosen += [pool[i] for i in rng.choice(len(pool), PER_BIN, replace=False)]
    return sorted(chosen, key=lambda r: r["id"])


def write(records: list[dict[str, Any]], out: Path) -> None:
    """``molecules.extxyz`` and ``molecules.csv`` in ``out``."""
    frames = []
    for r in records:
        frames += [str(len(r["species"])), f'id={r["id"]} pbc="F F F"']
        frames += [f"{s:<2} {x:14.8f} {y:14.8f} {z:14.8f}"
                   for s, (x, y, z) in zip(r["species"], r["positions"])]
    (out / "molecules.extxyz").write_text("\n".join(frames) + "\n")
    with open(out / "molecules.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in records:
            p = r["properties"]
            writer.writerow([r["id"], r["meta"]["smiles"], len(r["species"]),
                             f"{p['homo_eV']:.4f}", f"{p['lumo_eV']:.4f}", f"{p['gap_eV']:.4f}",
                             "test"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/qm9/structures.jsonl.gz"))
    parser.add_argument("--split", type=Path, default=Path("benchmarks/splits/qm9.json"))
    parser.add_argument("--out", type=Path, default=EXAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    records = draw(test_records(args.data, args.split), args.seed)
    write(records, args.out)
    print(f"{len(records)} molecules -> {args.out / 'molecules.extxyz'}, molecules.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
