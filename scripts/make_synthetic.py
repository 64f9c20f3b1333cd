"""Write a large synthetic JSON-lines.gz input: perturbed, relabelled copies of a real set.

Usage: python scripts/make_synthetic.py SRC.jsonl.gz OUT.jsonl.gz --n 1000000 [--seed 0]
       [--lattice-jitter 0.01] [--coord-jitter 0.002]

Each output record is a copy of a source record (cycled in order) with a fresh id
``syn-<i>``, lattice vectors scaled by 1 + N(0, lattice_jitter) and fractional coordinates
moved by N(0, coord_jitter): realistic sizes and compositions at any scale, all ids
distinct. The coordinate jitter breaks the crystals' symmetry, so equivalent atoms no longer
share a per-atom LSTM row (`fastgap.data`): screening such copies costs more per structure
than screening relaxed, symmetric crystals. ``--coord-jitter 0`` keeps the symmetry.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
from pathlib import Path

import numpy as np
import orjson


def load(src: Path) -> list[dict]:
    with gzip.open(src, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def synthesize(records: list[dict], n: int, rng: np.random.Generator,
               lattice_jitter: float = 0.01, coord_jitter: float = 0.002):
    """Yield ``n`` perturbed copies (dicts) of ``records`` in cyclic order."""
    for i, rec in zip(range(n), itertools.cycle(records)):
        lattice = np.asarray(rec["lattice"]) * (1.0 + rng.normal(0.0, lattice_jitter))
        frac = np.asarray(rec["frac_coords"])
        frac = frac + rng.normal(0.0, coord_jitter, size=frac.shape)
        yield {"id": f"syn-{i}", "lattice": lattice.round(6).tolist(), "species": rec["species"],
               "frac_coords": frac.round(6).tolist(), "properties": rec.get("properties", {}),
               "meta": {"copy_of": rec["id"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lattice-jitter", type=float, default=0.01,
                        help="relative std of the lattice scale factor")
    parser.add_argument("--coord-jitter", type=float, default=0.002,
                        help="std of the fractional coordinate moves (0: symmetric copies)")
    args = parser.parse_args()
    if args.n < 1:
        raise ValueError(f"--n: expected a positive count, got {args.n}")
    records = load(args.src)
    rng = np.random.default_rng(args.seed)
    with gzip.open(args.out, "wb", compresslevel=1) as f:
        for rec in synthesize(records, args.n, rng, args.lattice_jitter, args.coord_jitter):
            f.write(orjson.dumps(rec) + b"\n")


if __name__ == "__main__":
    main()
