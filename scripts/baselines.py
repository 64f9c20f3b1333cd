"""Reference baselines on a fixed split: the training-mean predictor and a composition-only model.

    python scripts/baselines.py --data ../shared/data/mp_gap36k/structures.jsonl.gz \
        --split benchmarks/splits/mp_gap36k.json --target band_gap_eV \
        --where-positive --max-z 85 --out benchmarks/baselines/gap_nonzero.json

The composition-only model is scikit-learn's HistGradientBoostingRegressor on element
fractions (118 columns) plus the number of atoms and the volume per atom: it sees no
geometry beyond density, so the gap between it and a structure model is what the structure
is worth. It is fitted on the training split only; the validation split is not used (no
tuning), the test split only for the numbers reported.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
from pymatgen.core.periodic_table import Element


def load(path: Path, target: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Ids, (S, 120) float64 features, (S,) target, (S,) max atomic number."""
    z_of = {}
    ids, rows, ys, zmax = [], [], [], []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            value = rec.get("properties", {}).get(target)
            if value is None:
                continue
            species = rec["species"]
            z = np.array([z_of.setdefault(s, Element(s).Z) for s in species])
            frac = np.bincount(z, minlength=119)[1:] / len(z)
            volume = abs(np.linalg.det(np.asarray(rec["lattice"]))) if "lattice" in rec else 0.0
            rows.append(np.concatenate([frac, [len(z), volume / len(z)]]))
            ids.append(rec["id"])
            ys.append(float(value))
            zmax.append(int(z.max()))
    return ids, np.array(rows), np.array(ys), np.array(zmax)


def metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    err = pred - y
    ss = float(((y - y.mean()) ** 2).sum())
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean())),
            "r2": float(1 - (err**2).sum() / ss) if ss > 0 else float("nan"), "n": len(y)}


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", type=Path, required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--where-positive", action="store_true", help="keep target > 0 only")
    p.add_argument("--max-z", type=int, default=118)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    ids, x, y, zmax = load(args.data, args.target)
    keep = (zmax <= args.max_z) & np.isfinite(y) & ((y > 0) if args.where_positive else True)
    split = json.loads(args.split.read_text())
    part = {i: name for name in ("train", "val", "test") for i in split[name]}
    which = np.array([part.get(i, "") for i in ids])
    tr, te = keep & (which == "train"), keep & (which == "test")
    mean = float(y[tr].mean())
    model = HistGradientBoostingRegressor(max_iter=500, learning_rate=0.05, random_state=args.seed)
    model.fit(x[tr], y[tr])
    pred = model.predict(x[te])
    if args.where_positive:
        pred = np.clip(pred, 0.0, None)
    out = {
        "data": str(args.data), "split": str(args.split), "target": args.target,
        "filters": {"target > 0": args.where_positive, "max_z": args.max_z},
        "n_train": int(tr.sum()), "n_test": int(te.sum()),
        "mean_baseline": metrics(y[te], np.full(int(te.sum()), mean)),
        "composition_hgb": metrics(y[te], pred),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
