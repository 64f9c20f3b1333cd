"""Write a fixed, seeded train/val/test split of a JSON-lines dataset's ids.

The split covers every record, so a filtered task (for example non-zero band gaps only)
uses the restriction of the same split and all tasks on one dataset share one test set.

    python scripts/make_split.py ../shared/data/mp_gap36k/structures.jsonl.gz \
        benchmarks/splits/mp_gap36k.json --seed 0 --fractions 0.8 0.1 0.1
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np


def read_ids(path: Path) -> list[str]:
    """Return the ``id`` of every record of a JSON-lines(.gz) file, in file order."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line)["id"] for line in fh if line.strip()]


def make_split(ids: list[str], fractions: tuple[float, float, float], seed: int) -> dict:
    """Shuffle sorted ids with ``np.random.default_rng(seed)`` and cut by ``fractions``."""
    if len(set(ids)) != len(ids):
        raise ValueError("ids: expected unique ids, found duplicates")
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions: expected three non-negative numbers summing to 1, got {fractions}")
    ordered = sorted(ids)
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n_train = int(round(fractions[0] * len(ids)))
    n_val = int(round(fractions[1] * len(ids)))
    return {
        "seed": seed,
        "fractions": list(fractions),
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fractions", type=float, nargs=3, default=(0.8, 0.1, 0.1))
    args = parser.parse_args()
    split = make_split(read_ids(args.dataset), tuple(args.fractions), args.seed)
    split["dataset"] = args.dataset.name if args.dataset.parent.name == "" else str(
        Path(args.dataset.parent.name) / args.dataset.name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(split) + "\n")
    print({k: len(v) for k, v in split.items() if isinstance(v, list) and k in ("train", "val", "test")})


if __name__ == "__main__":
    main()
