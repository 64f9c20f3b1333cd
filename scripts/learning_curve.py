"""Test MAE against training-set size on a fixed split (the design's model by default).

Each point trains on a seeded random subset of the split's training ids (same val and test
sets) with `fastgap train`, then reads the test MAE from the run's metrics.json:

    python scripts/learning_curve.py --store STORE --split benchmarks/splits/mp_gap36k.json \
        --sizes 1000 2000 4000 --out runs/learning_curve -- --target band_gap_eV \
        --where "band_gap_eV > 0" --max-z 85 --epochs 20 --threads 1 --no-progress

Points already trained (metrics.json present) are reused. Writes ``curve.json`` and
``curve.png`` (log-log) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def subset_split(split: dict, size: int, seed: int) -> dict:
    """The split with its training ids replaced by ``size`` of them drawn without replacement."""
    train = sorted(split["train"])
    if size > len(train):
        raise ValueError(f"sizes: {size} exceeds the {len(train)} training ids of the split")
    pick = np.random.default_rng(seed).choice(len(train), size, replace=False)
    return {**split, "train": sorted(train[i] for i in pick), "subset_of_train": size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True)
    p.add_argument("--split", type=Path, required=True)
    p.add_argument("--sizes", type=int, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fastgap", default="fastgap")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: fastgap train flags")
    args = p.parse_args()
    extra = [a for a in args.train_args if a != "--"]
    split = json.loads(args.split.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    points = []
    for size in args.sizes:
        run = args.out / f"n{size}"
        if not (run / "metrics.json").is_file():
            split_file = args.out / f"split_n{size}.json"
            split_file.write_text(json.dumps(subset_split(split, size, args.seed)))
            cmd = [args.fastgap, "train", "--store", args.store, "--split-file", str(split_file),
                   "--out", str(run), "--seed", str(args.seed), *extra]
            print(" ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True)
        metrics = json.loads((run / "metrics.json").read_text())
        test = metrics["test"]
        points.append({"n_train": metrics["train"]["tta"][next(iter(metrics["train"]["tta"]))]["n"],
                       "test": test})
    (args.out / "curve.json").write_text(json.dumps(points, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = next(iter(points[0]["test"]["tta"]))
    n = [pt["n_train"] for pt in points]
    mae = [pt["test"]["tta"][target]["mae"] for pt in points]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.loglog(n, mae, "o-")
    ax.set_xlabel("training structures")
    ax.set_ylabel(f"test MAE ({target})")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "curve.png", dpi=120)
    print(json.dumps([{"n_train": a, "test_mae": b} for a, b in zip(n, mae)]))


if __name__ == "__main__":
    main()
